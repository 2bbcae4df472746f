"""Instruments that measure why residual learning works, each one command: ``resnets study NAME``.

Each instrument is a module that keeps one contract (:mod:`resnets.studies.contract`): ``NAME``, ``CLAIM``,
``THRESHOLDS``, an ``Options`` dataclass, ``measure``, ``judge`` and ``render``. :func:`run_study` runs one and
writes ``NAME.json``, its figures and ``NAME.md``; :mod:`resnets.studies.report` gathers a directory of them
into one page. The table below is the one place that lists the instruments, in the order
``resnets study --help`` shows them.

>>> from resnets.studies import run_study
>>> saved = run_study("hessian", depths=(2, 4, 8), out="studies")  # doctest: +SKIP
>>> saved.verdict.status  # doctest: +SKIP
'supported'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from resnets.errors import UnknownNameError
from resnets.studies.contract import BUDGETS, PRECISIONS, Context
from resnets.studies.runner import Saved, rerender, run_study

#: name -> one line for --help; each instrument is the module resnets.studies.NAME
STUDIES: dict[str, str] = {
    "gradients": "gradient norm of every layer, plain vs residual vs Highway, over depth",
    "responses": "std of each residual branch's response in trained nets (He et al. 2015, Fig. 7)",
    "lesion": "error after deleting, k-deleting and swapping units (Veit et al. 2016)",
    "paths": "path lengths and the gradient each length carries (Veit et al. 2016)",
    "shattered": "autocorrelation of input gradients along a line (Balduzzi et al. 2017)",
    "iterative": "units refine their stage's estimate: cosine, update size, shuffles (Greff et al.)",
    "signal": "forward and gradient variance along depth under residual scaling (Hanin & Rolnick)",
    "gates": "transform-gate activity of trained Highway nets, per layer and checkpoint",
    "degradation": "training and test error of plain vs residual twins over depth (He et al. 2015)",
    "landscape": "loss surface along filter-normalised directions, residual vs plain (Li et al. 2018)",
    "hessian": "Hessian condition number of deep linear nets with 1/2/3-layer shortcuts (Li et al. 2016)",
    "scaling": "training without normalisation under residual scaling: who diverges or stalls",
    "dynamics": "per-unit branch/shortcut ratio, BN scale and path lengths over training",
}

__all__ = ["BUDGETS", "PRECISIONS", "STUDIES", "Context", "Saved", "get_study", "list_studies", "rerender", "run_study"]


def get_study(name: str) -> ModuleType:
    """The instrument module ``name``; an unknown name lists the known ones."""
    if name not in STUDIES:
        raise UnknownNameError("study", name, STUDIES, hint="`resnets study --help` lists them")
    return importlib.import_module(f"resnets.studies.{name}")


def list_studies() -> list[str]:
    return list(STUDIES)
