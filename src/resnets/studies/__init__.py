"""Instruments that measure why residual learning works, each one command: ``resnets study NAME``.

Each instrument is a module with ``NAME``, ``CLAIM`` and ``run(options) -> StudyResult``; it writes
``NAME.json``, its figures and ``NAME.md`` (see :mod:`resnets.studies.common`). The table below is the one
place that lists them, in the order ``resnets study --help`` shows.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from resnets.errors import UnknownNameError

#: What ``--precision`` takes: fp32 (the default, the same numbers on every CPU) or the device's fast precision.
PRECISIONS = ("fp32", "fast")

#: name -> (module under resnets.studies, one line for --help)
STUDIES: dict[str, tuple[str, str]] = {
    "gradients": ("gradients", "gradient norm of every layer, plain vs residual vs Highway, over depth"),
    "responses": ("responses", "std of each residual branch's response in trained nets (He et al. 2015, Fig. 7)"),
    "lesion": ("lesion", "error after deleting, k-deleting and swapping units (Veit et al. 2016)"),
    "paths": ("paths", "path lengths and the gradient each length carries (Veit et al. 2016)"),
    "shattered": ("shattered", "autocorrelation of input gradients along a line (Balduzzi et al. 2017)"),
    "iterative": ("iterative", "units refine their stage's estimate: cosine, update size, shuffles (Greff et al.)"),
    "signal": ("signal", "forward and gradient variance along depth under residual scaling (Hanin & Rolnick)"),
    "gates": ("gates", "transform-gate activity of trained Highway nets, per layer and checkpoint"),
    "degradation": ("degradation", "training and test error of plain vs residual twins over depth (He et al. 2015)"),
    "landscape": ("landscape", "loss surface along filter-normalised directions, residual vs plain (Li et al. 2018)"),
    "hessian": ("hessian", "Hessian condition number of deep linear nets with 1/2/3-layer shortcuts (Li et al. 2016)"),
    "scaling": ("scaling", "training without normalisation under residual scaling: who diverges or stalls"),
    "dynamics": ("dynamics", "per-unit branch/shortcut ratio, BN scale and path lengths over training"),
}


def get_study(name: str) -> ModuleType:
    """The instrument module ``name``; an unknown name lists the known ones."""
    if name not in STUDIES:
        raise UnknownNameError("study", name, STUDIES, hint="`resnets study --help` lists them")
    return importlib.import_module(f"resnets.studies.{STUDIES[name][0]}")


def list_studies() -> list[str]:
    return list(STUDIES)
