"""resnets: residual networks to build, train fast, and measure why residual learning works."""

from resnets.models import BlockInfo, SkipNetwork, capture_units, create_model, get_model_entry, list_models

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
