"""Model families and the registry; importing a family module registers its named variants."""

# The order of these imports is the order `list_models()` and `resnets models` list the families in.
# isort: off
from resnets.models import resnet_zoo  # noqa: F401  (registers the ResNet family)
from resnets.models import highway  # noqa: F401  (registers the Highway networks)
from resnets.models import densenet  # noqa: F401  (registers the DenseNets)
from resnets.models import resmlp  # noqa: F401  (registers the residual MLPs)
from resnets.models import transformer  # noqa: F401  (registers the residual Transformers)
from resnets.models import multires  # noqa: F401  (registers the multi-residual networks)
from resnets.models import plain_ll  # noqa: F401  (registers the looks-linear plain networks)
from resnets.models import speedrun  # noqa: F401  (registers the speedrun network and its plain twin)

# isort: on
from resnets.models.base import BlockInfo, SkipNetwork, capture_units
from resnets.models.depth import NoDepthSweep, create_at_depth, depth_options
from resnets.models.registry import ModelEntry, create_model, get_model_entry, list_models, register_model

__all__ = [
    "BlockInfo",
    "ModelEntry",
    "NoDepthSweep",
    "SkipNetwork",
    "capture_units",
    "create_at_depth",
    "create_model",
    "depth_options",
    "get_model_entry",
    "list_models",
    "register_model",
]
