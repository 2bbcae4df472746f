"""Bad names, options and inputs give one clear message naming what was expected."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.errors import InputShapeError, UnknownNameError


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'resnet21'.*resnet20"):
        create_model("resnet21")


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(UnknownNameError, match="'shortcuts'.*shortcut"):
        create_model("resnet20", shortcuts="A")


def test_wrong_channel_count_names_the_expected_shape() -> None:
    model = create_model("resnet20")
    with pytest.raises(InputShapeError, match=r"\(batch, 3, height, width\).*\(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))


def test_wrong_rank_names_the_expected_shape() -> None:
    with pytest.raises(InputShapeError, match=r"expects input of shape \(batch, 3, height, width\)"):
        create_model("resnet20")(torch.randn(3, 32, 32))
