"""One run's whole life through the CLI: train, then eval, predict and export it, on both precision branches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnets.cli import main

from .conftest import train_run


@pytest.mark.parametrize("native_bf16", [False, True])  # forced, so both branches run on every machine
def test_train_then_eval_predict_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, play_cpu, native_bf16: bool
) -> None:
    play_cpu(native_bf16)
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    run = train_run(tmp_path, args=("--max-steps", "4"))
    record = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert record["amp"] is native_bf16 and summary["checkpoint"] == "last"
    capsys.readouterr()

    assert main(["eval", str(run)]) == 0  # nothing but the run directory
    out = capsys.readouterr().out
    assert f"top-1 error {summary['test_error']:.2f}%" in out
    assert ("bf16 autocast" if native_bf16 else "fp32") in out.splitlines()[0]
    assert json.loads((run / "eval-test" / "eval.json").read_text())["top1_error"] == summary["test_error"]

    image = next((tmp_path / "data" / "test" / "bee").glob("*.png"))
    assert main(["predict", str(run), str(image), "--json", "--top-k", "3"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    top = json.loads(line)["top"]
    assert sorted(t["label"] for t in top) == ["ant", "bee", "cat"]
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)

    assert main(["export", str(run), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert (run / "exports" / "resnet20.torchscript.pt").stat().st_size > 100_000
    assert "verified: max |exported - PyTorch|" in out
