"""The recipe's conveniences: no decay on norms and biases, weight EMA, mixup/cutmix, random erasing, gradient
clipping; each checked against a hand computation, and a run with all of them on resumes bit for bit."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from resnets import create_model
from resnets.data import ArrayDataset, DataBundle
from resnets.errors import ConfigError
from resnets.inference import with_fast_model
from resnets.metrics import evaluate
from resnets.train import TrainConfig, apply_overrides, resume_config, train
from resnets.train.engine import Trainer
from resnets.train.mixing import BatchMixing, make_mixing, mixing_rng
from resnets.train.optim import make_optimizer

from .conftest import tiny_bundle, tiny_config

# tests/train/test_distributed_stop.py runs the same six under torchrun (stop, resume, compare).
ALL_SIX = {
    "decay_norm_and_bias": False,
    "ema_decay": 0.9,
    "mixup_alpha": 0.4,
    "cutmix_alpha": 1.0,
    "random_erasing": 0.5,
    "grad_clip_norm": 0.5,
}


def _recipe(**fields):
    return apply_overrides(TrainConfig(), {"recipe": "fast", **fields}).recipe


# --- no weight decay on norm weights and biases -------------------------------------------------------------


def test_no_decay_group_holds_exactly_the_one_dimensional_parameters_of_resnet20():
    model = create_model("resnet20")
    decayed, plain = make_optimizer(model, _recipe(decay_norm_and_bias=False, weight_decay=5e-4)).param_groups
    # resnet20: 19 convolutions + fc.weight decay; 19 BatchNorms (weight, bias) + fc.bias do not
    assert (len(decayed["params"]), len(plain["params"])) == (20, 39)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in plain["params"]} == {id(p) for p in model.parameters() if p.ndim == 1}
    (single,) = make_optimizer(model, _recipe(weight_decay=5e-4)).param_groups  # the default: one group
    assert len(single["params"]) == 59 and single["weight_decay"] == 5e-4


def test_a_step_with_zero_gradients_shrinks_only_the_decayed_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(
        model, _recipe(decay_norm_and_bias=False, weight_decay=0.1, lr=0.5, momentum=0.0, nesterov=False)
    )
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["0.weight"].detach(), before["0.weight"] * (1 - 0.5 * 0.1))  # w - lr*wd*w
    for name in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[name].detach(), before[name]), name


# --- weight EMA -------------------------------------------------------------------------------------------------


def test_ema_after_two_steps_is_the_hand_formula_and_is_what_the_run_saves_and_measures(tmp_path, bundle):
    decay = 0.9
    config = tiny_config(tmp_path / "run", max_steps=2, ema_decay=decay, decay_norm_and_bias=False)
    trainer = Trainer(config, bundle, False)
    model = trainer.session.model
    name = "layer1.0.conv1.weight"
    snaps = [model.get_parameter(name).detach().clone()]
    trainer.training.optimizer.register_step_post_hook(
        lambda *_: snaps.append(model.get_parameter(name).detach().clone())
    )
    trainer.run()
    w0, w1, w2 = snaps
    assert not torch.equal(w1, w2)
    saved = load_file(str(tmp_path / "run/checkpoints/last.safetensors"))
    expected = decay * (decay * w0 + (1 - decay) * w1) + (1 - decay) * w2
    torch.testing.assert_close(saved[name], expected, rtol=0, atol=1e-7)
    assert int(saved["bn1.num_batches_tracked"]) == 2  # counts are copied, not averaged
    state = torch.load(tmp_path / "run/checkpoints/last.state.pt", weights_only=True)
    assert torch.equal(state["raw_weights"][name], w2)  # the weights being trained, for resuming
    # both parameter groups got the step's learning rate from the engine
    assert [g["lr"] for g in trainer.training.optimizer.param_groups] == [trainer.training.schedule.lr(1)] * 2
    # the recorded test figures are those of the saved (EMA) weights, measured as `resnets eval` measures them
    (row,) = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert row["weights"] == "ema"
    ema_model = create_model(trainer.config.model, num_classes=2, in_channels=1)
    ema_model.load_state_dict(saved)
    precision = trainer.session.record.precision(trainer.precision.device)
    fast, batches = with_fast_model(ema_model, trainer.session.test_loader.epoch_batches(0), precision=precision)
    assert evaluate(fast, batches, 2).loss == pytest.approx(row["test_loss"], rel=1e-6)


# --- mixup and cutmix ------------------------------------------------------------------------------------------


class _FixedLambda(random.Random):
    """A generator whose Beta draw is forced, so the mixture can be checked by hand."""

    def __init__(self, lam: float) -> None:
        super().__init__(0)
        self.lam = lam

    def betavariate(self, alpha: float, beta: float) -> float:
        return self.lam


def _soft_target_ce(logits, y, partners, lam, smoothing):
    """Cross-entropy against the mixed, smoothed label distribution, written out."""
    k = logits.shape[1]

    def smoothed(labels):
        return F.one_hot(labels, k).float() * (1 - smoothing) + smoothing / k

    target = lam * smoothed(y) + (1 - lam) * smoothed(partners)
    return (-(target * logits.log_softmax(1)).sum(1)).mean()


@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (8, 6)])  # images and vectors
def test_mixup_blends_each_sample_with_its_partner_and_the_loss_is_the_label_mixture(shape):
    x, y = torch.randn(shape), torch.arange(8) % 3
    mixed = BatchMixing(mixup_alpha=0.2)(x, y, _FixedLambda(0.3))
    perm = mixed.perm
    assert sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    assert mixed.method == "mixup" and mixed.lam == 0.3
    assert torch.equal(mixed.inputs, 0.3 * x + 0.7 * x[perm])
    logits = torch.randn(8, 3)
    expected = _soft_target_ce(logits, y, y[perm], 0.3, 0.1)
    torch.testing.assert_close(mixed.loss(logits, 0.1), expected)
    assert torch.equal(mixed.dominant(), y[perm])  # the partner has the larger share (0.7)
    assert torch.equal(BatchMixing(mixup_alpha=0.2)(x, y, _FixedLambda(0.6)).dominant(), y)


def test_cutmix_pastes_a_box_whose_area_is_exactly_one_minus_the_corrected_lambda():
    b, h, w = 8, 16, 12
    x = torch.arange(b, dtype=torch.float32)[:, None, None, None].expand(b, 2, h, w).clone()  # sample i is all i
    y = torch.arange(b)
    clipped = 0
    for seed in range(20):
        mixed = BatchMixing(cutmix_alpha=1.0)(x, y, mixing_rng(seed, 0))
        assert mixed.method == "cutmix"
        for i in range(b):
            j = int(mixed.perm[i])
            if j == i:
                continue
            pasted = mixed.inputs[i] == j
            assert torch.equal(pasted | (mixed.inputs[i] == i), torch.ones_like(pasted))
            rows, cols = pasted[0].any(1).nonzero(), pasted[0].any(0).nonzero()
            if len(rows):  # one rectangle, the same in every channel
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert int(pasted[0].sum()) == int(box) and torch.equal(pasted[0], pasted[1])
            assert int(pasted[0].sum()) / (h * w) == pytest.approx(1 - mixed.lam, abs=1e-12)
        drawn = mixing_rng(seed, 0).betavariate(1.0, 1.0)  # the uncorrected lambda: the stream's first draw
        clipped += abs(drawn - mixed.lam) > 0.05
    assert clipped > 0  # boxes at the border were clipped, and lambda followed the area


def test_with_both_on_each_batch_uses_one_of_them_about_half_the_time():
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    mixing = BatchMixing(mixup_alpha=0.2, cutmix_alpha=1.0)
    methods = [mixing(x, y, mixing_rng(7, step)).method for step in range(60)]
    assert 20 <= methods.count("cutmix") <= 40 and methods.count("mixup") == 60 - methods.count("cutmix")
    first, again = mixing(x, y, mixing_rng(7, 3, 1)), mixing(x, y, mixing_rng(7, 3, 1))
    assert torch.equal(first.inputs, again.inputs) and first.lam == again.lam  # a pure function of the seed
    other = mixing(x, y, mixing_rng(7, 3, 0))  # another rank mixes differently
    assert not torch.equal(first.inputs, other.inputs)


def test_cutmix_on_vectors_and_random_erasing_without_augmentation_are_refused(tmp_path, bundle):
    assert make_mixing(_recipe(), "image") is None
    with pytest.raises(ConfigError, match="cutmix_alpha=1 .*vector"):
        make_mixing(_recipe(cutmix_alpha=1.0), "vector")
    assert make_mixing(_recipe(mixup_alpha=0.2), "vector") == BatchMixing(0.2, 0.0)
    with pytest.raises(ConfigError, match="random_erasing=0.5 .*augment false"):
        train(tiny_config(tmp_path / "a", augment=False, random_erasing=0.5), data=bundle)
    with pytest.raises(ConfigError, match="random_erasing=0.5 .*vector data"):
        train(_vector_config(tmp_path / "b", random_erasing=0.5), data=_vector_bundle())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written


def _vector_bundle() -> DataBundle:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (48,), generator=g)
    x = torch.randn(48, 6, generator=g) + y[:, None].float()
    split = ArrayDataset(x, y)
    return DataBundle("vec", "vector", ["a", "b"], split, split, None, (0.0,) * 6, (1.0,) * 6, False)


def _vector_config(out, **recipe):
    base = TrainConfig(model="resmlp_identity_20", data="vec", seed=3, device="cpu", quiet=True, out=str(out))
    return apply_overrides(base, {"recipe": "fast", "epochs": 1, "batch_size": 16, **recipe})


def test_mixup_trains_on_vectors_and_counts_errors_against_the_dominant_label(tmp_path):
    config = _vector_config(tmp_path / "run", mixup_alpha=0.4, max_steps=3)
    trainer = Trainer(config, _vector_bundle(), False)
    seen = []
    original = trainer.mixing

    class Recording:
        def __call__(self, x, y, rng):
            mixed = original(x, y, rng)
            seen.append((mixed.dominant(), y))
            return mixed

    trainer.mixing = Recording()
    outputs = []
    trainer.model.register_forward_hook(lambda module, args, out: outputs.append(out.detach()))
    trainer.run()
    # the first 3 forwards are the 3 training steps (the evaluation after them runs a copy of the model)
    errors = [100.0 * float((out.argmax(1) != target).sum()) / 16 for out, (target, _) in zip(outputs[:3], seen)]
    assert len(seen) == 3 and [e for *_, e in trainer.steps] == errors
    assert any(not torch.equal(target, y) for target, y in seen)  # a step whose partner had the larger share


# --- gradient clipping -----------------------------------------------------------------------------------------


def test_clipping_brings_the_global_gradient_norm_down_to_the_maximum(tmp_path, bundle, monkeypatch):
    limit = 0.3
    trainer = Trainer(tiny_config(tmp_path / "run", max_steps=4, grad_clip_norm=limit), bundle, False)
    before, after = [], []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: before.append(float(clip(*a, **k))))

    def global_norm(optimizer, *_):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        after.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in grads]))))

    trainer.training.optimizer.register_step_pre_hook(global_norm)
    trainer.run()
    assert len(before) == len(after) == 4 and any(n > limit for n in before)
    for unclipped, clipped in zip(before, after):
        assert clipped == pytest.approx(min(unclipped, limit), rel=1e-5)


# --- all six together: bit-exact resume ------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"ema_decay": 0.9}, ALL_SIX], ids=["ema", "all-six"])
def test_a_stopped_run_resumes_bit_for_bit(tmp_path, options):
    data = tiny_bundle()
    train(tiny_config(tmp_path / "whole", epochs=1, **options), data=data)
    train(tiny_config(tmp_path / "parts", epochs=1, max_steps=4, **options), data=data)  # stops mid-epoch
    summary = train(resume_config(tmp_path / "parts", {"max_steps": None}), data=data, resume=True)
    assert summary["steps"] == 6
    for name in ("last.safetensors", "last.state.pt"):
        whole, parts = (_tensors(tmp_path / run / "checkpoints" / name) for run in ("whole", "parts"))
        assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole), name
    assert (tmp_path / "parts/steps.csv").read_text() == (tmp_path / "whole/steps.csv").read_text()
    ema = load_file(str(tmp_path / "whole/checkpoints/last.safetensors"))
    raw = torch.load(tmp_path / "whole/checkpoints/last.state.pt", weights_only=True)["raw_weights"]
    assert not torch.equal(ema["fc.weight"], raw["fc.weight"])  # the file holds the average, not the raw weights


def _tensors(path) -> dict[str, torch.Tensor]:
    """The weights of a .safetensors file, or the raw weights and optimiser moments of a state file."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, weights_only=True)
    moments = {f"momentum.{i}": s["momentum_buffer"] for i, s in state["optimizer"]["state"].items()}
    return {**{f"raw.{k}": v for k, v in state["raw_weights"].items()}, **moments}


def test_the_summary_names_the_ema_and_a_resume_cannot_change_the_parameter_groups(tmp_path):
    summary = train(tiny_config(tmp_path / "run", epochs=1, max_steps=2, ema_decay=0.9), data=tiny_bundle())
    assert summary["weights"] == "ema (decay 0.9)"
    # Two parameter groups instead of one would not fit the saved optimiser state: refused before any loading.
    with pytest.raises(
        ConfigError, match=r"cannot change --decay-norm-and-bias when resuming .* \(saved True, given False\)"
    ):
        resume_config(tmp_path / "run", {"decay_norm_and_bias": False})
