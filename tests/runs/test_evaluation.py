"""Evaluation: metrics on hand-built cases with known answers, the report files, and `resnets eval` on real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.errors import DataError
from resnets.evaluation import write_eval_report
from resnets.metrics import MetricAccumulator, evaluate, format_table
from resnets.runs import open_run

from .conftest import write_image_tree


class FixedLogits(torch.nn.Module):
    """A "model" whose output for sample i is row i of a table, so every metric is known in advance."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


def ranked(order: list[int], num_classes: int) -> torch.Tensor:
    """Logits that rank the classes in ``order`` (best first), the rest after."""
    row = torch.full((num_classes,), -100.0)
    for rank, c in enumerate(order):
        row[c] = 10.0 - rank
    return row


def test_metrics_on_a_known_case() -> None:
    # 7 classes, 5 samples: sample (target, ranking)
    samples = [
        (0, [0]),  # top-1 right
        (0, [1, 2, 3, 4, 0]),  # right only at rank 5: top-5 right
        (1, [2, 3, 4, 5, 6, 1]),  # rank 6: top-5 wrong
        (1, [1]),  # top-1 right
        (2, [0, 2]),  # rank 2: top-5 right
    ]
    table = torch.stack([ranked(order, 7) for _, order in samples])
    batches = [(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])), (torch.tensor([3, 4]), torch.tensor([1, 2]))]
    classes = [f"c{i}" for i in range(7)]
    result = evaluate(FixedLogits(table), batches, 7, classes=classes)
    assert result.n == 5
    # cross-entropy by hand: log(sum_j e^{z_j}) - z_target, averaged over the 5 samples
    expected = [math.log(sum(math.exp(float(z)) for z in row)) - float(row[t]) for (t, _), row in zip(samples, table)]
    assert result.loss == pytest.approx(sum(expected) / 5, rel=1e-6)
    assert result.top1_error == pytest.approx(60.0)  # 2 of 5 right
    assert result.top5_error == pytest.approx(20.0)  # only sample 2 misses its top 5
    assert result.per_class_accuracy["c0"] == pytest.approx(50.0)
    assert result.per_class_accuracy["c1"] == pytest.approx(50.0)
    assert result.per_class_accuracy["c2"] == pytest.approx(0.0)
    assert result.per_class_accuracy["c3"] is None  # no samples: not 0%, not 100%
    assert result.per_class_count == {"c0": 2, "c1": 2, "c2": 1, "c3": 0, "c4": 0, "c5": 0, "c6": 0}
    assert result.confusion[0][:3] == [1, 1, 0] and result.confusion[1][:3] == [0, 1, 1]
    assert result.confusion[2][:3] == [1, 0, 0] and sum(map(sum, result.confusion)) == 5
    table_text = format_table(result)
    assert "top-1 error 60.00%" in table_text and "top-5 error 20.00%" in table_text


def test_top5_is_not_reported_with_five_classes_or_fewer() -> None:
    accumulator = MetricAccumulator(5)
    accumulator.update(torch.eye(5), torch.tensor([0, 1, 2, 3, 0]))
    result = accumulator.result(list("abcde"))
    assert result.top5_error is None and result.top1_error == pytest.approx(20.0)
    assert "n/a" in format_table(result)


def test_bad_labels_and_empty_split() -> None:
    accumulator = MetricAccumulator(3)
    with pytest.raises(DataError, match=r"labels range over \[0, 3\] but the model has 3 classes"):
        accumulator.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(DataError, match="the split is empty"):
        accumulator.result(["a", "b", "c"])


def test_report_files(tmp_path: Path) -> None:
    accumulator = MetricAccumulator(3)
    accumulator.update(torch.eye(3), torch.tensor([0, 1, 1]))
    result = accumulator.result(["ant", "bee", "cat"])
    paths = write_eval_report(result, {"model": "m", "data": "d", "split": "test"}, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert saved["per_class_accuracy"] == {"ant": 100.0, "bee": 50.0, "cat": None}
    assert saved["top5_error"] is None and saved["n"] == 3 and saved["model"] == "m"
    with Image.open(paths["png"]) as image:
        assert image.format == "PNG" and image.size[0] > 200


def test_eval_needs_nothing_but_the_run_and_prints_its_recorded_test_error(
    trained_run, capsys: pytest.CaptureFixture
) -> None:
    run = trained_run()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    recorded = json.loads((run / "summary.json").read_text())["test_error"]
    assert f"top-1 error {recorded:.2f}%" in out and "normalised with the run's statistics" in out
    report = json.loads((run / "eval-test" / "eval.json").read_text())
    assert report["top1_error"] == recorded  # the same number, not a close one
    assert report["n"] == 12 and report["checkpoint"].endswith("last.safetensors") and report["top5_error"] is None
    assert report["mean"] == json.loads((run / "config.json").read_text())["data"]["mean"]
    assert sum(map(sum, report["confusion"])) == 12
    assert (run / "eval-test" / "confusion.png").stat().st_size > 1000


def test_eval_uses_the_runs_validation_split_and_its_best_checkpoint(trained_run, tmp_path: Path) -> None:
    run = trained_run(args=("--val-size", "3"))
    summary = json.loads((run / "summary.json").read_text())
    assert main(["eval", str(run), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["n"] == 3 and report["checkpoint"].endswith("best.safetensors")  # 3 of the 12 training images
    assert report["top1_error"] == summary["best"]["val_error"]
    assert main(["eval", str(run), "--out", str(tmp_path / "test")]) == 0
    assert json.loads((tmp_path / "test" / "eval.json").read_text())["top1_error"] == summary["best"]["test_error"]


@pytest.mark.pinned_precision("the run trains and is measured in fp32 (--no-amp)")
def test_eval_tta_replaces_the_recipes_views_and_equals_a_hand_average_of_each_image_and_its_mirror(
    trained_run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = trained_run(args=("--no-amp",))
    recorded = json.loads((run / "summary.json").read_text())
    reports = {}
    for level in (None, 0, 1):
        out = tmp_path / f"tta-{level}"
        assert main(["eval", str(run), "--out", str(out), *(["--tta", str(level)] if level is not None else [])]) == 0
        reports[level] = json.loads((out / "eval.json").read_text())
    assert "test-time augmentation level 1 (2 views)" in capsys.readouterr().out
    assert (reports[None]["tta"], reports[0]["views"], reports[1]["views"]) == (0, 1, 2)  # the recipe's: none
    assert reports[None]["loss"] == reports[0]["loss"] == pytest.approx(recorded["test_loss"], rel=1e-6)

    opened = open_run(run)  # by hand: eager, unfolded, the mean of the logits of each image and its mirror
    model, losses, right = opened.model.eval(), [], 0
    with torch.no_grad():
        for images, targets in opened.loader("test").epoch_batches(0):
            logits = 0.5 * model(images) + 0.5 * model(images.flip(-1))
            losses.append(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            right += int((logits.argmax(1) == targets).sum())
    assert reports[1]["loss"] == pytest.approx(float(sum(losses)) / 12, rel=1e-4)
    assert reports[1]["loss"] != pytest.approx(reports[0]["loss"], rel=1e-4)  # the views change the number
    assert reports[1]["top1_error"] == pytest.approx(100 * (1 - right / 12))


def test_eval_cli_errors(trained_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = trained_run()
    two = write_image_tree(tmp_path / "two", ("ant", "bee"))
    assert main(["eval", str(run), "--data", str(two)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 2 classes but the model has 3" in err[0]
    rgb = trained_run(channels=3)
    grey = write_image_tree(tmp_path / "grey")
    assert main(["eval", str(rgb), "--data", str(grey)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give the model 1 input channels, but it was built for 3" in err[0]
    assert main(["eval", str(run), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no best checkpoint" in err[0] and "validation split" in err[0]
    assert main(["eval", str(tmp_path / "w.pth"), "--data", str(grey)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
