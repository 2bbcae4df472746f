"""Depth rules: which options give a registered model a chosen number of weighted layers.

Depth sweeps (He et al. 2015's 20 to 110 layers, a Highway net at the nearest depth it can have) need to rebuild
a named model at another depth. How a family counts its layers belongs with the families, not with each caller:

- CIFAR-layout ResNets, their plain twins and multi-residual nets with basic blocks: 6n+2 layers (a stem conv,
  three stages of n blocks of two convs, the classifier);
- looks-linear plain nets: 6n+2 layers with 2n single-conv units per stage;
- convolutional Highway nets: 3n+4 (n highway layers per stage; a stem, two transitions and the classifier);
- speedrun nets and their plain twins: 3n+5 (the whitening conv, three stage entries, n single-conv units per
  stage, the classifier);
- models whose config has a ``depth`` field (fully connected Highway nets, residual MLPs, Transformers): that.
"""

from __future__ import annotations

from typing import Any

from resnets.errors import ConfigError
from resnets.models.base import SkipNetwork
from resnets.models.registry import create_model, get_model_entry


class NoDepthSweep(ConfigError):
    """The model's family has no depth parameter to sweep (as opposed to a depth it cannot take)."""


def depth_options(name: str, depth: int) -> dict[str, Any]:
    """The options that give the registered model ``name`` ``depth`` weighted layers (see the module docstring)."""
    entry = get_model_entry(name)
    fields = entry.options()
    if "depth" in fields:
        return {"depth": depth}
    layers = fields.get("layers")
    if entry.family in ("resnet-cifar", "multires") and len(layers) == 3 and fields.get("block", "basic") == "basic":
        n = _per_stage(name, depth, 2, 6)
        return {"layers": (n, n, n)}
    if entry.family == "looks-linear":
        n = _per_stage(name, depth, 2, 6)
        return {"layers": (2 * n,) * 3}
    if entry.family == "highway" and layers is not None and len(layers) == 3:
        n = _per_stage(name, depth, 4, 3)
        return {"layers": (n, n, n)}
    if entry.family == "speedrun" and layers is not None and len(layers) == 3:
        n = _per_stage(name, depth, 5, 3)
        return {"layers": (n, n, n)}
    raise NoDepthSweep(
        f"model {name!r} has no depth sweep; use a CIFAR ResNet or plain net (resnet20, plain20), a Highway net, "
        "a residual MLP, a looks-linear net, a speedrun net or a Transformer"
    )


def create_at_depth(name: str, depth: int, **options: Any) -> SkipNetwork:
    """The registered model ``name`` rebuilt with ``depth`` weighted layers; ``options`` as for create_model."""
    return create_model(name, **depth_options(name, depth), **options)


def _per_stage(name: str, depth: int, fixed: int, per: int) -> int:
    if depth < fixed + per or (depth - fixed) % per:
        raise ConfigError(f"depth {depth} does not fit {name!r}: it takes {per}n+{fixed} layers (n >= 1)")
    return (depth - fixed) // per
