"""`resnets predict`: images read, converted and normalised as in training; top-k labels; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.errors import DataError
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
    net = open_run(run_dir).model
    x = torch.stack([read_image(p, 1, (8, 8)) for p in paths]).float() / 255
    with torch.no_grad():
        expected = net((x - mean) / std).softmax(dim=1)
    for prediction, row in zip(predictions, expected):
        assert len(prediction.labels) == 2
        assert prediction.labels[0] == ["ant", "bee", "cat"][int(row.argmax())]
        assert prediction.probabilities[0] == pytest.approx(float(row.max()), abs=1e-6)
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
