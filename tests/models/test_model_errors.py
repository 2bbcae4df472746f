"""Bad names, options and inputs give one clear message naming what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError, InputShapeError, UnknownNameError
from resnets.models.profile import build_meta, count_parameters
from resnets.models.resnet import ResNetConfig
from resnets.models.transformer import SequenceEncoder, TransformerConfig


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


# Options the chosen blocks or model kind cannot use are refused, not silently ignored (torchvision's BasicBlock
# raises on groups/base_width the same way); where they apply they take effect.

RESNET_BASIC_OPTIONS = (
    "act, block, drop_path_rate, layers, norm, residual_scale, se_reduction, shortcut, stem, stem_width, widths, "
    "zero_init_last"
)


def _refusal(name: str, **options: Any) -> str:
    """The one-line message ``create_model`` gives for options that do not apply."""
    with pytest.raises(ConfigError) as info:
        create_model(name, **options)
    message = str(info.value)
    assert message.startswith(f"bad option for model {name!r}: ") and "\n" not in message
    return message


def test_bottleneck_and_wide_options_on_basic_blocks_are_refused_by_name() -> None:
    message = _refusal("resnet20", groups=8, base_width=4, stride_in_1x1=True, dropout=0.5)
    assert "options groups=8, base_width=4, stride_in_1x1=True do not apply to basic blocks, only to" in message
    assert "only to bottleneck and preact_bottleneck blocks; option dropout" in message
    assert "option dropout=0.5 does not apply to basic blocks, only to preact_basic blocks" in message
    assert "leave them at their defaults (groups=1, base_width=64, stride_in_1x1=False, dropout=0.0)" in message
    assert message.endswith(f"; options for this model: {RESNET_BASIC_OPTIONS}")


def test_one_inapplicable_option_is_named_alone() -> None:
    message = _refusal("resnet50", dropout=0.5)
    assert "option dropout=0.5 does not apply to bottleneck blocks" in message and "groups=" not in message
    assert message.endswith(
        "options for this model: act, base_width, block, drop_path_rate, groups, layers, norm, residual_scale, "
        "se_reduction, shortcut, stem, stem_width, stride_in_1x1, widths, zero_init_last"
    )
    assert "option groups=2 does not apply to preact_basic blocks" in _refusal("wrn_16_8", groups=2)
    assert "option dropout=0.3 does not apply to preact_bottleneck blocks" in _refusal("preact_resnet164", dropout=0.3)


def test_changing_the_block_refuses_what_the_variant_set_for_the_old_one() -> None:
    assert "options groups=32, base_width=4 do not apply to basic blocks" in _refusal("resnext50_32x4d", block="basic")


def test_options_left_at_their_defaults_are_accepted_anywhere() -> None:
    model = create_model("resnet20", groups=1, base_width=64, stride_in_1x1=False, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_grouped_convs_apply_to_bottlenecks() -> None:
    model = build_meta("resnet50", groups=32, base_width=4)
    conv = model.layer1[0].conv2
    assert conv.groups == 32 and conv.out_channels == 128  # 64 planes * 4 / 64 * 32 groups
    assert count_parameters(model) == 25_028_904  # torchvision's resnext50_32x4d
    assert build_meta("resnet50", stride_in_1x1=True).layer2[0].conv1.stride == (2, 2)  # v1: stride on the 1x1


def test_dropout_applies_to_wide_resnet_blocks() -> None:
    model = create_model("wrn_16_8", dropout=0.3)
    blocks = model.residual_blocks()
    assert len(blocks) == 6 and all(isinstance(b.module.dropout, nn.Dropout) for b in blocks)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] * 6


def test_plain_twins_refuse_zero_init_and_stochastic_depth() -> None:
    message = _refusal("plain20", zero_init_last=True, drop_path_rate=0.1)
    assert "option drop_path_rate=0.1 does not apply to plain nets (shortcut='none'): a dropped block" in message
    assert "option zero_init_last=True does not apply to plain nets (shortcut='none')" in message
    assert message.endswith(
        "options for this model: act, block, layers, norm, residual_scale, se_reduction, "
        "shortcut, stem, stem_width, widths"
    )
    assert "zero_init_last=True" in _refusal("resnet20", shortcut="none", zero_init_last=True)
    assert "drop_path_rate=0.2" in _refusal("multires_cifar_k2", shortcut="none", drop_path_rate=0.2)
    model = create_model("resnet20", zero_init_last=True, drop_path_rate=0.1)  # with shortcuts both apply
    assert model.layer3[2].drop_path.p == pytest.approx(0.1)


def test_transformer_options_apply_to_their_model_kind_only() -> None:
    message = _refusal("seq_encoder_pre_6", img_size=64, patch_size=8)
    assert "options img_size=64, patch_size=8 do not apply to sequence models (SequenceEncoder)" in message
    assert message.endswith(
        "options for this model: act, depth, dim, drop_path_rate, max_tokens, mlp_ratio, "
        "norm_placement, num_heads, pool"
    )
    message = _refusal("vit_tiny_patch4_32", max_tokens=64)
    assert "option max_tokens=64 does not apply to image models (VisionTransformer)" in message
    assert "img_size, mlp_ratio, norm_placement, num_heads, patch_size, pool" in message
    assert build_meta("vit_tiny_patch4_32", img_size=64, patch_size=8).pos_embed.shape == (1, 1 + 64, 128)
    assert build_meta("seq_encoder_pre_6", max_tokens=40).pos_embed.shape == (1, 40, 64)
    with pytest.raises(ConfigError, match="img_size 30 must be a multiple of patch_size 4"):
        create_model("vit_tiny_patch4_32", img_size=30)
    with pytest.raises(ValueError, match="img_size=64"):  # built directly, without the registry
        SequenceEncoder(TransformerConfig(img_size=64))


def test_resmlp_skip_options_need_the_skips_they_configure() -> None:
    message = _refusal("resmlp_identity_20", learned_init="zeros")
    assert "option learned_init='zeros' does not apply to identity skips, only to learned skips" in message
    assert message.endswith("options for this model: act, depth, norm, residual_scale, skip_kind, skips, width")
    message = _refusal("resmlp_plain_20", skip_kind="learned", learned_init="zeros")
    assert "options skip_kind='learned', learned_init='zeros' do not apply to a net without skips" in message
    assert "skip distances [30] exceed depth 20" in _refusal("resmlp_identity_20", skips=(2, 30))
    layer = create_model("resmlp_learned_20", learned_init="zeros").layers[5]
    assert torch.count_nonzero(layer.skips["k2"].weight) == 0


def test_densenet_compression_needs_a_transition() -> None:
    message = _refusal("densenet_bc_100_12", block_config=(4,), compression=0.8)
    assert "option compression=0.8 does not apply to a DenseNet of one dense block" in message
    create_model("densenet_bc_100_12", block_config=(4,))  # one block at the default compression builds
    assert build_meta("densenet_bc_100_12", block_config=(2, 2), compression=1.0).num_features == 24 + 4 * 12


def test_inapplicable_options_are_refused_when_a_config_is_built_directly() -> None:
    with pytest.raises(ValueError, match="options groups=2, stride_in_1x1=True do not apply to basic blocks"):
        ResNetConfig(block="basic", groups=2, stride_in_1x1=True)


def test_cli_train_reports_an_inapplicable_model_option_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for cls in ("left", "right"):
            folder = tmp_path / "tree" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), 60 * i, np.uint8), mode="L").save(folder / f"{i}.png")
    code = main(
        [
            "train",
            "--model",
            "resnet20",
            "--model-option",
            "groups=8",
            "--data",
            str(tmp_path / "tree"),
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "bad option for model 'resnet20': option groups=8 does not apply to basic blocks" in err
