"""Depth rules of the registry: the options that give a registered model a chosen number of weighted layers."""

from __future__ import annotations

import pytest

from resnets.errors import ConfigError
from resnets.models import NoDepthSweep, create_at_depth, depth_options
from resnets.train import weighted_depth


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet20", 32), ("plain20", 56), ("plain_ll_cifar20", 32), ("highway_fc_10", 30), ("resmlp_identity_20", 12)],
)
def test_create_at_depth_counts_weighted_layers(name: str, depth: int) -> None:
    model = create_at_depth(name, depth)
    if name.startswith(("resnet", "plain")):
        assert weighted_depth(model) == depth  # the paper's count: stem + 2 convs per block + classifier
    else:
        assert model.config.depth == depth  # fully connected Highway nets and residual MLPs take it directly


def test_each_family_counts_its_layers_its_own_way() -> None:
    assert depth_options("resnet20", 110) == {"layers": (18, 18, 18)}  # 6n+2
    assert depth_options("plain_ll_cifar20", 20) == {"layers": (6, 6, 6)}  # 6n+2, 2n single-conv units per stage
    assert depth_options("highway_cifar19", 55) == {"layers": (17, 17, 17)}  # 3n+4
    assert depth_options("resmlp_identity_20", 7) == {"depth": 7}


def test_depths_that_do_not_fit_and_models_without_a_sweep_are_refused() -> None:
    with pytest.raises(ConfigError, match="depth 21 does not fit 'resnet20': it takes 6n\\+2 layers"):
        create_at_depth("resnet20", 21)
    with pytest.raises(NoDepthSweep, match="no depth sweep"):
        create_at_depth("densenet121", 100)
    assert issubclass(NoDepthSweep, ConfigError)  # one line and exit status 2 on the command line
