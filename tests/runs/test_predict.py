"""`resnets predict`: images read, converted and normalised as in training; top-k labels; clear errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.errors import DataError
from resnets.export import export_model
from resnets.predict import predict_images, read_image
from resnets.runs import open_run


def write_pngs(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):  # RGB at another size, so conversion to L and resizing both happen
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


def test_read_image_converts_and_resizes(tmp_path: Path) -> None:
    (path,) = write_pngs(tmp_path, 1)
    grey = read_image(path, 1, (8, 8))
    assert grey.shape == (1, 8, 8) and grey.dtype == torch.uint8
    assert read_image(path, 3, (12, 10)).shape == (3, 12, 10)


def test_predictions_match_the_model(run_dir: Path, tmp_path: Path) -> None:
    paths = write_pngs(tmp_path / "images")
    predictions = predict_images(run_dir, paths, top_k=2)
    assert [p.path for p in predictions] == [str(p) for p in paths]
    config = json.loads((run_dir / "config.json").read_text())
    (mean,), (std,) = config["data"]["mean"], config["data"]["std"]  # the run's training statistics
    assert 0.3 < mean < 0.7 and std > 0.1
    run = open_run(run_dir)
    x = torch.stack([read_image(p, 1, (8, 8)) for p in paths]).float() / 255
    with torch.no_grad():
        expected = run.model((x - mean) / std).softmax(dim=1)  # eager fp32
    # A run trained where bf16 is native predicts in bf16 autocast (8 mantissa bits): probabilities within 2e-2.
    tolerance = 2e-2 if run.precision.amp else 1e-6
    for prediction, row in zip(predictions, expected):
        assert len(prediction.labels) == 2
        best, second = row.topk(2).values.tolist()
        if best - second > 2 * tolerance:  # a closer call may go either way within the tolerance
            assert prediction.labels[0] == ["ant", "bee", "cat"][int(row.argmax())]
        assert prediction.probabilities[0] == pytest.approx(best, abs=tolerance)
        assert prediction.probabilities[0] >= prediction.probabilities[1]


def test_predict_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = run_dir
    paths = write_pngs(tmp_path / "images")
    assert main(["predict", str(run), *map(str, paths), "--top-k", "5", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 2 and len(rows[0]["top"]) == 3  # top-k is capped at the 3 classes
    assert sum(t["probability"] for t in rows[0]["top"]) == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", str(run), str(paths[0])]) == 0
    assert "%" in capsys.readouterr().out


def test_unreadable_image_names_the_path(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = run_dir
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(run), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot read image {str(bad)!r}" in err[0]
    with pytest.raises(DataError, match="does not exist"):
        predict_images(run, [tmp_path / "nope.png"])


def test_a_folder_stands_for_its_images_sorted_and_recursive(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "photos"
    b, a = write_pngs(folder / "b", 1)[0], write_pngs(folder / "a", 1)[0]  # written b first: the order is sorted
    jpeg = folder / "a" / "Z.JPG"  # upper-case extensions are images too
    Image.new("RGB", (8, 8), (200, 10, 10)).save(jpeg, "JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "a" / "labels.csv").write_text("a,b\n")
    write_pngs(folder / ".thumbnails", 1)  # hidden folders are not entered
    single = write_pngs(tmp_path / "single", 1)[0]
    assert main(["predict", str(run_dir), str(single), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    paths = [json.loads(line)["path"] for line in captured.out.splitlines()]
    assert paths == [str(single), str(jpeg), str(a), str(b)]  # named files first; then by path, "Z" before "i"
    assert captured.err.strip() == "skipped 2 files that are not images"


def test_an_empty_folder_is_one_error_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no images here")
    assert main(["predict", str(run_dir), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    folder = str(tmp_path / "empty")
    expected = f"folder {folder!r} holds no image files (only 1 other file); expected PNG, JPEG or other images"
    assert len(err) == 1 and err[0].startswith(f"resnets predict: error: {expected}")


def test_predictions_as_csv_json_and_jsonl_say_the_same(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    paths = write_pngs(tmp_path / "images")
    assert main(["predict", str(run_dir), *map(str, paths), "--top-k", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["rank"] for t in lines[0]["top"]] == [1, 2]
    assert main(["predict", str(run_dir), *map(str, paths), "--top-k", "2", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "rank", "label", "probability"] and len(rows) == 1 + 2 * 2
    from_jsonl = [[p["path"], str(t["rank"]), t["label"], t["probability"]] for p in lines for t in p["top"]]
    assert [[r[0], r[1], r[2], float(r[3])] for r in rows[1:]] == from_jsonl  # the same numbers, to the last bit
    out = tmp_path / "out" / "predictions.json"
    assert main(["predict", str(run_dir), *map(str, paths), "--top-k", "2", "--output", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out} (2 predictions, json)\n"
    assert json.loads(out.read_text()) == lines  # --format from the extension: one JSON array
    assert [p.name for p in out.parent.iterdir()] == ["predictions.json"]  # no temporary file left


def test_predict_does_not_overwrite_a_runs_files_or_its_inputs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (image,) = write_pngs(tmp_path / "images", 1)
    config = (run_dir / "config.json").read_text()
    scripted = export_model(run_dir, "torchscript").path  # RUN/exports/resnet20.torchscript.pt
    for target in (run_dir / "config.json", run_dir / "checkpoints" / "last.safetensors", scripted, image):
        for model in (run_dir, scripted):  # the run's files are refused whichever model predicts
            assert main(["predict", str(model), str(image), "--output", str(target), "--format", "csv"]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            inputs = target in (model, image)
            message = "is one of predict's inputs" if inputs else "is a file of the run directory"
            assert len(err) == 1 and message in err[0], err
    assert main(["predict", str(run_dir), str(image), "--output", str(tmp_path / "images"), "--format", "csv"]) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert main(["predict", str(run_dir), str(image), "--output", str(tmp_path / "out.xlsx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot tell the format of --output" in err[0] and ".csv, .json" in err[0]
    assert (run_dir / "config.json").read_text() == config
    assert main(["predict", str(run_dir), str(image), "--output", str(run_dir / "predictions.csv")]) == 0  # new: fine
    assert (run_dir / "predictions.csv").read_text().startswith("path,rank,label,probability\n")
