"""Learning-rate schedules, per iteration."""

from __future__ import annotations

import math

import pytest

from resnets import create_model
from resnets.train import LRSchedule, get_recipe, weighted_depth
from resnets.train.recipes import Recipe


def test_he2015_steps_at_32k_and_48k():
    s = LRSchedule(get_recipe("he2015-cifar"), steps_per_epoch=391, total_steps=64000, depth=56)
    assert s.lr(0) == 0.1 and s.lr(31999) == 0.1
    assert s.lr(32000) == pytest.approx(0.01) and s.lr(47999) == pytest.approx(0.01)
    assert s.lr(48000) == pytest.approx(0.001) and s.lr(63999) == pytest.approx(0.001)


def test_he2015_deep_warmup_ends_when_train_error_is_below_80_percent():
    s = LRSchedule(get_recipe("he2015-cifar"), steps_per_epoch=391, total_steps=64000, depth=110)
    assert s.lr(0) == 0.01
    for _ in range(50):
        s.observe(90.0)
    assert s.lr(50) == 0.01
    for _ in range(30):
        s.observe(70.0)
    assert not s.deep_warmup and s.lr(80) == 0.1
    s.observe(95.0)  # the switch is one-way
    assert s.lr(81) == 0.1


def test_deep_warmup_state_round_trips():
    s = LRSchedule(get_recipe("he2015-cifar"), steps_per_epoch=10, total_steps=100, depth=164)
    s.observe(85.0)
    t = LRSchedule(get_recipe("he2015-cifar"), steps_per_epoch=10, total_steps=100, depth=164)
    t.load_state_dict(s.state_dict())
    assert t.error_ema == 85.0 and t.deep_warmup


def test_paper_depth_counts_weighted_layers():
    assert weighted_depth(create_model("resnet110")) == 110
    assert weighted_depth(create_model("resnet56")) == 56


def test_cosine_with_linear_warmup():
    r = Recipe(lr=0.2, schedule="cosine", epochs=10, warmup_epochs=1, warmup_start_factor=0.1)
    s = LRSchedule(r, steps_per_epoch=100, total_steps=1000)
    assert s.lr(0) == pytest.approx(0.02)
    assert s.lr(50) == pytest.approx(0.11)
    assert s.lr(100) == pytest.approx(0.2)
    assert s.lr(550) == pytest.approx(0.1)  # half-way through the cosine
    assert s.lr(1000) == pytest.approx(0.0, abs=1e-12)


def test_max_steps_does_not_change_the_cosine_horizon():
    r = Recipe(lr=0.2, schedule="cosine", epochs=10, max_steps=30)
    assert LRSchedule(r, steps_per_epoch=100, total_steps=30).lr(500) == pytest.approx(0.1)


def test_linear_decays_linearly():
    r = Recipe(lr=1.0, schedule="linear", epochs=2, warmup_epochs=1, final_lr_factor=0.0)
    s = LRSchedule(r, steps_per_epoch=10, total_steps=20)
    assert s.lr(10) == 1.0 and s.lr(15) == pytest.approx(0.5) and math.isclose(s.lr(20), 0.0, abs_tol=1e-12)


def test_linear_is_the_old_onecycle_curve_by_hand():
    """Warm-up from 0.1 to 1 over 10 steps, then a straight line to final_lr_factor 0.1 at step 30; then flat."""
    r = Recipe(lr=1.0, schedule="linear", epochs=3, warmup_epochs=1, warmup_start_factor=0.1, final_lr_factor=0.1)
    s = LRSchedule(r, steps_per_epoch=10, total_steps=40)
    by_hand = {0: 0.1, 5: 0.55, 10: 1.0, 15: 0.775, 20: 0.55, 30: 0.1, 40: 0.1}
    assert {step: s.lr(step) for step in by_hand} == pytest.approx(by_hand)
    renamed = LRSchedule(Recipe(**{**vars(r), "schedule": "onecycle"}), steps_per_epoch=10, total_steps=40)
    assert renamed.recipe.schedule == "linear" and [renamed.lr(k) for k in range(41)] == [s.lr(k) for k in range(41)]
