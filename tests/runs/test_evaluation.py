"""Evaluation: metrics on hand-built cases with known answers, the report files, and `resnets eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.errors import DataError
from resnets.evaluate import MetricAccumulator, evaluate_model, format_table, write_eval_report


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
    result = evaluate_model(FixedLogits(table), batches, classes)
    assert result.n == 5
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


def write_image_tree(root: Path, classes: tuple[str, ...], size: int = 8, per_class: int = 2) -> Path:
    """root/{train,test}/CLASS/*.png, greyscale, in the image-folder format the data package reads."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(folder / f"{i}.png")
    return root


@pytest.fixture
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))


def test_eval_cli_on_a_run(make_run, tmp_path: Path, no_cache, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run")
    data = write_image_tree(tmp_path / "images", ("ant", "bee", "cat"))
    assert main(["eval", str(run), "--data", str(data), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "top-1 error" in out and "normalised with the run's statistics" in out
    report = json.loads((run / "eval-test" / "eval.json").read_text())
    assert report["n"] == 6 and report["mean"] == [0.5] and report["top5_error"] is None
    assert sum(map(sum, report["confusion"])) == 6
    assert (run / "eval-test" / "confusion.png").stat().st_size > 1000


def test_eval_uses_the_runs_validation_split(make_run, tmp_path: Path, no_cache) -> None:
    run = make_run(tmp_path / "run", val_size=2)
    data = write_image_tree(tmp_path / "images", ("ant", "bee", "cat"), per_class=3)
    assert main(["eval", str(run), "--data", str(data), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["n"] == 2  # 2 of the 9 training images


def test_eval_cli_errors(make_run, tmp_path: Path, no_cache, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run")
    two = write_image_tree(tmp_path / "two", ("ant", "bee"))
    assert main(["eval", str(run), "--data", str(two)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 2 classes but the model has 3" in err[0]
    rgb = make_run(tmp_path / "rgb", sample_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.2,) * 3)
    grey = write_image_tree(tmp_path / "grey", ("ant", "bee", "cat"))
    assert main(["eval", str(rgb), "--data", str(grey)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give the model 1 input channels, but it was built for 3" in err[0]
    assert main(["eval", str(tmp_path / "w.pth"), "--data", str(grey)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
