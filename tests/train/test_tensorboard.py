"""--tensorboard writes what Lightning users look for: per-step loss and lr, grouped tags, and the HParams tab."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from resnets.train import resume_config, train

from .conftest import tiny_bundle, tiny_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def test_per_step_curves_grouped_tags_and_hparams_and_a_resume_joins_up(tmp_path) -> None:
    run = tmp_path / "run"
    data = tiny_bundle(val=16)  # 96 training images: 6 steps per epoch at batch 16
    train(replace(tiny_config(run, epochs=2, max_steps=8), tensorboard=True), data=data)  # stops inside epoch 2
    summary = train(replace(resume_config(run, {"max_steps": None}), tensorboard=True), data=data, resume=True)
    events = _events(run / "tensorboard")
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/error", "train/lr", "test/error", "val/error", "train/epoch_loss"} <= tags
    assert not {"lr", "test_error", "train_loss"} & tags  # no flat names
    with open(run / "steps.csv") as file:
        logged = {int(row["step"]): (float(row["lr"]), float(row["loss"])) for row in csv.DictReader(file)}
    lr, loss = _scalars(events, "train/lr"), _scalars(events, "train/loss")
    assert sorted(lr) == sorted(loss) == list(range(1, 13))  # every step once, across both sessions
    assert all(lr[s] == pytest.approx(logged[s][0]) and loss[s] == pytest.approx(logged[s][1]) for s in logged)
    assert sorted(_scalars(events, "test/error")) == [6, 8, 12]  # epoch 1, the stop inside epoch 2, epoch 2
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    result = _scalars(events, "hparam/test_error")  # each session's result: the checkpoint eval reads
    assert sorted(result) == sorted(_scalars(events, "hparam/val_error")) == [8, 12]
    assert result[12] == pytest.approx(summary["test_error"]) and summary["checkpoint"] == "best"
    # the best checkpoint's row stays in metrics.jsonl across the resume, even when the stop inside epoch 2 chose it
    rows = {row["epoch"]: row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert summary["test_error"] == rows[summary["checkpoint_epoch"]]["test_error"]


def test_the_writer_writes_into_the_folder_the_guard_made_even_if_it_is_swapped_for_a_link(tmp_path) -> None:
    from resnets.train.tensorboard import TensorBoard

    folder, moved, elsewhere = tmp_path / "run" / "tensorboard", tmp_path / "moved", tmp_path / "elsewhere"
    elsewhere.mkdir()
    board = TensorBoard.open(folder)
    folder.rename(moved)  # the folder is swapped for a link while the run trains
    folder.symlink_to(elsewhere, target_is_directory=True)
    board.write({"step": 1, "test_error": 12.5}, [(1, 0.1, 2.0, 50.0)])
    board.close()
    assert list(elsewhere.iterdir()) == []
    assert _scalars(_events(moved), "test/error") == {1: 12.5} and _scalars(_events(moved), "train/loss") == {1: 2.0}
