"""resnets: residual networks to build, train fast, and measure why residual learning works.

The names below load on first use (PEP 562), so ``import resnets`` (and the ``resnets`` command's start) does not
import torch before it needs it: the command installs its signal handlers first, and Ctrl-C during the import of
torch is then one line, not a traceback. The subpackages load on first use too: after ``import resnets``,
``resnets.runs.open_run(...)`` works as it reads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnets.api import create_model
    from resnets.models import BlockInfo, SkipNetwork, capture_units, get_model_entry, list_models

__version__ = "0.1.0"
__all__ = [
    "BlockInfo",
    "SkipNetwork",
    "__version__",
    "capture_units",
    "create_model",
    "get_model_entry",
    "list_models",
]
#: Subpackages and modules reached as ``resnets.NAME`` without importing them first.
SUBMODULES = ("bench", "data", "io", "layers", "models", "reports", "runs", "studies", "train", "evaluation", "export")


def __getattr__(name: str) -> Any:
    if name == "create_model":  # the registry's, with pretrained=True (resnets.api: it joins models and io)
        from resnets.api import create_model

        return create_model
    if name in __all__:
        import resnets.models

        return getattr(resnets.models, name)
    if name in SUBMODULES:
        return importlib.import_module(f"resnets.{name}")
    raise AttributeError(f"module 'resnets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *SUBMODULES})
