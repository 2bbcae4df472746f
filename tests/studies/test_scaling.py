"""The scaling instrument against values known independently: second moments of the unnormalised residual MLP at
initialisation (closed forms derived below), the stall threshold, divergence at an absurd learning rate, the CLI.

The branch of a layer with a skip is z^l = W a^{l-1} + b (norm identity) with PyTorch's default Linear init:
W and b uniform on (-1/sqrt(n), 1/sqrt(n)), variance 1/(3n), zero mean, independent of everything before them.
So, over the layer's weights with the earlier activations fixed, E|z^l|^2 = (|a^{l-1}|^2 + 1) / 3 and the cross
term with the skip vanishes: E|a^{l-2} + s z^l|^2 = |a^{l-2}|^2 + s^2 (|a^{l-1}|^2 + 1) / 3. Without the ReLU
(act identity) the stream is that sum itself, so m_l = E|a^l|^2 obeys m_l = m_{l-2} + s^2 (m_{l-1} + 1) / 3, with
m_1 = (m_0 + 1) / 3 (layer 1 has no skip and is not scaled) and m_0 = n (|x|^2 + 1) / (3 d_in) from the stem.
In p_l = m_l + 1 this is p_l = p_{l-2} + c p_{l-1}, c = s^2 / 3, which grows like r^l with r = (c + sqrt(c^2 + 4)) / 2
= exp(asinh(c / 2)): exponential in depth at s = 1, about exp(L s^2 / 6) = exp(1/6) at s = 1/sqrt(L) (Hanin &
Rolnick 2018: bounded exactly when the summed scales are).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.layers.skip_unit import UnitCapture
from resnets.models.base import BlockInfo, capture_units
from resnets.runs.directory import RunDir
from resnets.runs.record import read_record
from resnets.studies import Context, scaling

Draw = tuple[torch.Tensor, list[BlockInfo], dict[int, UnitCapture], list[torch.Tensor]]


def _draws(act: str, s: float | str, depth: int, draws: int, width: int = 128, d_in: int = 16) -> Iterator[Draw]:
    """Per weight draw: the input x, the units, their captures (branch, shortcut) and outputs, in float64."""
    torch.manual_seed(0)
    options = {"depth": depth, "width": width, "in_channels": d_in, "num_classes": 3, "norm": "identity"}
    model = create_model("resmlp_identity_20", act=act, residual_scale=s, **options).double()
    blocks = model.residual_blocks()
    x = torch.randn(4, d_in, dtype=torch.float64)
    for _ in range(draws):
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()  # a fresh draw of the default init
        outputs: list[torch.Tensor] = []
        keep = outputs.append
        hooks = [b.module.register_forward_hook(lambda m, i, out, keep=keep: keep(out.detach())) for b in blocks]
        with capture_units(blocks) as caps, torch.no_grad():
            model(x)
        for hook in hooks:
            hook.remove()
        yield x, blocks, caps, outputs


def _sq(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).sum(1)  # |.|^2 per sample


@pytest.mark.parametrize("scale", [1.0, "inv_sqrt_depth"])
def test_relu_branch_and_preactivation_second_moments_match_the_closed_form(scale: float | str) -> None:
    depth, draws = 8, 120
    measured_z, expected_z = torch.zeros(depth - 1), torch.zeros(depth - 1)
    measured_u, expected_u = torch.zeros(depth - 1), torch.zeros(depth - 1)
    for _, blocks, caps, outputs in _draws("relu", scale, depth, draws):
        s = blocks[1].unit.residual_scale
        for i in range(1, depth):  # layer l = i + 1 >= 2: branch z^l, shortcut a^{l-2}, input a^{l-1}
            z, skip, before = caps[i].branch, caps[i].shortcut, outputs[i - 1]
            measured_z[i - 1] += _sq(z).mean()
            expected_z[i - 1] += ((_sq(before) + 1) / 3).mean()
            measured_u[i - 1] += _sq(skip + s * z).mean()
            expected_u[i - 1] += (_sq(skip) + s * s * (_sq(before) + 1) / 3).mean()
    assert s == pytest.approx(1.0 if scale == 1.0 else 1 / math.sqrt(depth - 1))
    assert (measured_z / expected_z).tolist() == pytest.approx([1.0] * (depth - 1), abs=0.05)
    assert (measured_u / expected_u).tolist() == pytest.approx([1.0] * (depth - 1), abs=0.05)
    assert (measured_z.sum() / expected_z.sum()).item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("scale", "growth"), [(1.0, 8.596), ("inv_sqrt_depth", 1.0785)])
def test_linear_stream_grows_along_depth_as_the_recurrence_says(scale: float | str, growth: float) -> None:
    depth, width, d_in, draws = 16, 128, 16, 300
    total = torch.zeros(depth + 1, dtype=torch.float64)
    for x, blocks, caps, outputs in _draws("identity", scale, depth, draws, width, d_in):
        stream = [caps[1].shortcut] + outputs  # a^0 (the skip into layer 2), a^1, ..., a^depth
        total += torch.stack([_sq(a).mean() for a in stream])
    s = 1.0 if scale == 1.0 else 1 / math.sqrt(depth - 1)
    m = [width * ((_sq(x) + 1) / (3 * d_in)).mean().item()]
    m.append((m[0] + 1) / 3)
    for l in range(2, depth + 1):
        m.append(m[l - 2] + s * s * (m[l - 1] + 1) / 3)
    assert (total / draws).tolist() == pytest.approx(m, rel=0.05)
    assert m[-1] / m[0] == pytest.approx(growth, rel=1e-3)  # the recurrence, evaluated by hand once
    c = s * s / 3  # its closed form: p_l = A r^l + B (-1/r)^l
    r = (c + math.sqrt(c * c + 4)) / 2
    a, b = (m[1] + 1 + (m[0] + 1) / r) / (r + 1 / r), (r * (m[0] + 1) - m[1] - 1) / (r + 1 / r)
    assert m[-1] + 1 == pytest.approx(a * r**depth + b * (-1 / r) ** depth, rel=1e-9)


def test_stall_threshold_scale_values_and_plans() -> None:
    assert scaling.chance_error(10) == pytest.approx(0.9)
    assert scaling.finished_outcome(0.80, 10) == "stalled" and scaling.finished_outcome(0.79, 10) == "trained"
    assert scaling.finished_outcome(0.57, 3) == "stalled" and scaling.finished_outcome(0.56, 3) == "trained"
    assert scaling.finished_outcome(math.nan, 10) == "stalled"
    net = scaling.build_net("resmlp_identity_20", 100)
    assert (net.units, net.options) == (99, {"depth": 100})  # layer 1 has no layer two below it
    assert scaling.scale_value(scaling.INV_SQRT, net.units) == pytest.approx(0.1005037815)
    conv = scaling.build_net("resnet20", 56)
    assert (conv.units, conv.options) == (27, {"layers": (9, 9, 9)})
    cpu, paper = Context(), Context(budget="paper")
    assert [n.depth for n in scaling.plan(scaling.Options(), cpu)] == [30, 100, 200]  # DEFAULT_RUNS["scaling"]
    assert [n.depth for n in scaling.plan(scaling.Options(), paper)] == [30, 100, 300, 1000]
    assert [n.label for n in scaling.plan(scaling.Options(models=("resnet56",)), cpu)] == ["resnet56"]
    with pytest.raises(ConfigError, match="no unit with a shortcut"):
        scaling.build_net("plain20", 20)
    with pytest.raises(ConfigError, match="residual_scale"):
        scaling.plan(scaling.Options(models=("highway_fc_10",)), cpu)


def test_absurd_learning_rate_diverges_at_step_two_and_a_sane_run_trains(
    batch_bars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Step 1's loss is computed before any update, so it is finite; at lr 1e30 that update leaves weights of
    # ~1e28 and the next forward pass overflows float32: the engine must name step 2.
    context = Context(data=str(batch_bars), out=str(tmp_path), quiet=True)
    net = scaling.build_net("resmlp_identity_20", 4)
    path, step = scaling.train_scaled(context, net, 1.0, 0, steps=5, lr=1e30)
    assert step == 2
    losses = [row["loss"] for row in RunDir(path).read_steps()]
    assert len(losses) == 2 and math.isfinite(losses[0]) and not math.isfinite(losses[1])
    import resnets.train

    with monkeypatch.context() as patch:  # asked again, the diverged run is read back, never trained again
        patch.setattr(resnets.train, "train", lambda *args, **kwargs: pytest.fail("a diverged run was retrained"))
        assert scaling.train_scaled(context, net, 1.0, 0, steps=5, lr=1e30) == (path, 2)
    measured = scaling.measure_run(path, step, samples=24)
    assert (measured["outcome"], measured["diverged_at"], measured["curve"]["step"]) == ("diverged", 2, [1, 2])

    path, step = scaling.train_scaled(context, net, 0.1, 0, steps=6)
    assert step is None
    measured = scaling.measure_run(path, step, samples=144)
    assert measured["outcome"] == "trained" and measured["train_error"] < 100 * (2 / 3 - 0.1)
    assert measured["curve"]["step"] == [1, 2, 3, 4, 5, 6]
    assert measured["test_error"] == RunDir(path).read_json("summary.json")["test_error"]


def test_cli_writes_the_outcomes_of_every_scale_and_depth(batch_bars: Path, tmp_path: Path) -> None:
    argv = ["study", "scaling", "--data", str(batch_bars), "--steps", "2", "--depths", "3,5", "--seeds", "1"]
    assert main([*argv, "--samples", "24", "--quiet", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert [(n["depth"], n["units"]) for n in saved["settings"]["nets"]] == [(3, 2), (5, 4)]
    cells = saved["numbers"]["cells"]
    assert [(c["depth"], c["scale"]) for c in cells] == [
        (d, s) for d in (3, 5) for s in ("1", "0.3", "0.1", "1/sqrt(L)")
    ]
    assert [c["scale_value"] for c in cells] == pytest.approx([1, 0.3, 0.1, 2**-0.5, 1, 0.3, 0.1, 0.5])
    assert [c["scale_sum"] for c in cells] == pytest.approx([2, 0.18, 0.02, 1, 4, 0.36, 0.04, 1])
    assert all(sum(c["counts"].values()) == 1 for c in cells)
    runs = saved["numbers"]["runs"]
    assert len(runs) == 8
    for r in runs:
        rows = RunDir(r["run"]).read_steps()
        assert r["curve"]["loss"] == pytest.approx([row["loss"] for row in rows], nan_ok=True)
        assert r["initial_loss"] == pytest.approx(rows[0]["loss"])
        config = read_record(Path(r["run"])).train
        assert config["model_options"]["norm"] == "identity" and config["recipe"]["lr"] == scaling.LR
        if r["outcome"] != "diverged":
            assert r["test_error"] == RunDir(r["run"]).read_json("summary.json")["test_error"]
    trained = {scale: [r["outcome"] == "trained" for r in runs if r["scale"] == scale] for scale in ("1", "0.3")}
    if any(c["counts"]["trained"] for c in cells):
        checks = {c["name"]: c for c in saved["checks"]}  # one seed: each share is one value
        assert checks["scale_one_fails"]["values"] == [sum(trained["1"]) / 2]
        down = [r["outcome"] == "trained" for r in runs if r["scale"] != "1"]
        assert checks["scaled_train"]["values"] == [sum(down) / 6]
    else:
        assert saved["status"] == "undecided" and saved["checks"] == []
    text = (tmp_path / "scaling.md").read_text()
    assert scaling.CLAIM in text and saved["verdict"] in text
    for name in ("scaling-loss.png", "scaling-outcomes.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
