"""Every case of issue 21 (an independent probe of 420 crafted inputs), and its family, as a regression test.

Each command ends with exit status 2 and one line naming what was refused, or (a signal) 130; nothing outside
the place the user named is written, and the run still opens afterwards.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from resnets.cli import main
from resnets.io import guard
from resnets.io.atomic import sha256_file
from resnets.runs import open_run
from resnets.runs.checkpoint import verify

from .conftest import write_image_tree


def one_line(argv: list[str], capsys: pytest.CaptureFixture, *expected: str, code: int = 2) -> str:
    """Run the CLI: exit ``code`` and exactly one stderr line holding every string of ``expected``."""
    capsys.readouterr()
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "internal error" not in lines[0], lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def contents(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder, the target for a link)."""
    seen: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        seen[key] = os.readlink(path).encode() if path.is_symlink() else None if path.is_dir() else path.read_bytes()
    return seen


def edit_record(run: Path, change) -> None:
    record = json.loads((run / "config.json").read_text())
    change(record)
    (run / "config.json").write_text(json.dumps(record))


# Data loss: a run's own files are written only by its training -------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "checkpoints/last.safetensors",
        "checkpoints/last.json",
        "checkpoints/new.safetensors",
        "config.json",
        "metrics.csv",
        "summary.json",
        "steps.csv",
        "env.json",
        "exports/../config.json",
    ],
)
def test_export_never_replaces_a_runs_own_files(run_dir: Path, capsys: pytest.CaptureFixture, target: str) -> None:
    before = contents(run_dir)
    out = f"{run_dir}/{target}"
    for format in ("onnx", "safetensors"):
        one_line(["export", str(run_dir), "--format", format, "--out", out], capsys, "only its training writes")
    assert contents(run_dir) == before
    assert verify(run_dir / "checkpoints")["step"] == 2 and open_run(run_dir).record.model == "resnet20"


def test_a_link_from_elsewhere_into_a_run_is_seen_through(run_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "alias").symlink_to(run_dir / "checkpoints", target_is_directory=True)
    before = contents(run_dir)
    argv = ["export", str(run_dir), "--format", "safetensors", "--out", str(tmp_path / "alias" / "last.safetensors")]
    one_line(argv, capsys, "only its training writes")
    assert contents(run_dir) == before


def test_predict_and_eval_never_write_into_the_checkpoints(run_dir: Path, tmp_path: Path, capsys) -> None:
    (image,) = write_image_tree(tmp_path / "images", ("a",), per_class=1).glob("train/a/*.png")
    before = contents(run_dir)
    one_line(["predict", str(run_dir), str(image), "--output", str(run_dir / "checkpoints/p.csv")], capsys, "run")
    one_line(["eval", str(run_dir), "--out", str(run_dir / "checkpoints")], capsys, "only its training writes")
    assert contents(run_dir) == before


# Writes outside: nothing is written through a link inside a run ------------------------------------------


def test_export_refuses_a_symlinked_exports_folder(run_dir: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "exports").symlink_to(outside, target_is_directory=True)
    one_line(["export", str(run_dir), "--format", "safetensors"], capsys, "symlink inside the run directory")
    nested = run_dir / "real"
    nested.mkdir()
    (nested / "sub").symlink_to(outside, target_is_directory=True)
    argv = ["export", str(run_dir), "--format", "onnx", "--out", str(nested / "sub" / "m.onnx")]
    one_line(argv, capsys, "symlink inside the run directory")
    assert list(outside.iterdir()) == []


def test_resume_refuses_a_symlinked_checkpoints_folder(run_dir: Path, tmp_path: Path, capsys) -> None:
    moved = tmp_path / "elsewhere"
    (run_dir / "checkpoints").rename(moved)
    (run_dir / "checkpoints").symlink_to(moved, target_is_directory=True)
    before = contents(moved)
    one_line(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"], capsys, "symlink")
    assert contents(moved) == before  # not one byte written into the link's target
    assert not (run_dir / ".lock").read_bytes()  # and the lock was let go


def test_resume_refuses_a_symlinked_tensorboard_folder(run_dir: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "tensorboard").symlink_to(outside, target_is_directory=True)
    argv = ["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet", "--tensorboard"]
    one_line(argv, capsys, f"{str(run_dir / 'tensorboard')!r}", "symlink inside the run directory")
    assert list(outside.iterdir()) == []  # TensorBoard made no folder and no event file through the link
    assert not (run_dir / ".lock").read_bytes() and not guard._owns(run_dir)  # the lock was let go
    (run_dir / "tensorboard").unlink()
    assert main(argv) == 0
    (events,) = (run_dir / "tensorboard").iterdir()  # in the folder the guard made, not a link
    assert events.name.startswith("events.out.tfevents.") and events.stat().st_size > 0
    assert not (run_dir / "tensorboard").is_symlink()


def test_a_planted_link_under_a_report_name_is_not_followed(run_dir: Path, tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("keep me\n")
    out = tmp_path / "report"
    out.mkdir()
    (out / "eval.json").symlink_to(victim)
    one_line(["eval", str(run_dir), "--out", str(out)], capsys, "symlink")
    assert victim.read_text() == "keep me\n"


# Memory: sizes are bounded where they are read, and batches are checked against the machine ---------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["data"].update(sample_shape=[3, 100000, 100000]), "data.sample_shape"),
        (lambda r: r.update(num_classes=10**9), "num_classes"),
        (lambda r: r.update(eval_batch_size=10**12), "eval_batch_size"),
        (lambda r: r["data"].update(sample_shape=[10**6, 8, 8]), "data.sample_shape"),
    ],
    ids=["sample-shape", "num-classes", "eval-batch", "channels"],
)
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_sizes_in_a_record_that_ask_for_terabytes_are_refused(
    run_dir: Path, tmp_path: Path, capsys, change, expected: str, command: str
) -> None:
    (image,) = write_image_tree(tmp_path / "images", ("a",), per_class=1).glob("train/a/*.png")
    edit_record(run_dir, change)
    argv = {
        "eval": ["eval", str(run_dir)],
        "predict": ["predict", str(run_dir), str(image)],
        "export": ["export", str(run_dir), "--format", "safetensors"],
    }[command]
    one_line(argv, capsys, "config.json", expected, "expected")


def test_a_batch_that_does_not_fit_in_memory_is_refused_before_it_is_allocated(
    run_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from resnets.io import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 2 * 10**9)  # the same answer on every machine
    (image,) = write_image_tree(tmp_path / "images", ("a",), per_class=1).glob("train/a/*.png")
    edit_record(run_dir, lambda r: r["data"].update(sample_shape=[1, 4096, 4096]))
    for argv in (["predict", str(run_dir), str(image)], ["export", str(run_dir), "--format", "onnx"]):
        one_line(argv, capsys, "resnet20 on a batch of", "1x4096x4096", "of memory but 2 GB is available")
    assert not (run_dir / "exports").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--image-size", "100000"], "image-size must be an integer in [1, 8,192], or none, got 100000"),
        (["--crop-padding", "1000000"], "crop-padding must be an integer in [0, 8,192], got 1000000"),
        (["--crop-padding", "8000", "--batch-size", "4"], "a batch of 4 x 1x16008x16008) needs 9.23 GB"),
        pytest.param(
            ["--image-size", "4096", "--batch-size", "4"],
            "training (resnet20 on a batch of 4 x 1x4096x4096) needs",
            marks=pytest.mark.slow,  # the tree is decoded at 4096 x 4096 first: 5 s
        ),
        (["--threads", "100000"], "threads must be an integer in [1, "),
        (["--set", "pad_mode=reflect", "--crop-padding", "8"], "mirrors more than the 8x8 images hold"),  # torch's
    ],
)
def test_flags_that_ask_for_more_than_the_machine_has_are_refused(
    tmp_path: Path, capsys, monkeypatch, flags, expected
) -> None:
    from resnets.io import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 2 * 10**9)  # the same answer on every machine
    data = write_image_tree(tmp_path / "data", size=8)
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--data", str(data), "--out", str(out), "--max-steps", "1", *flags]
    one_line([*argv, "--quiet", "--device", "cpu"], capsys, expected)
    assert not out.exists()  # refused before the run directory was made, or the folder it made went again


# Tracebacks that were: a full disk, bad shapes, bad text, links, huge values, signals ---------------------


def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(run_dir: Path, capsys, monkeypatch) -> None:
    good = sha256_file(run_dir / "checkpoints/last.safetensors")

    def full(handle: int, data: bytes) -> None:  # the disk fills when the weights come: the small files fit
        if len(data) < 100_000:
            os.write(handle, data)
            return
        os.write(handle, data[: len(data) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(guard, "_write_all", full)
    line = one_line(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"], capsys, "No space left")
    assert "the checkpoint of step 2 is kept" in line
    monkeypatch.undo()
    assert verify(run_dir / "checkpoints")["step"] == 2
    assert sha256_file(run_dir / "checkpoints/last.safetensors") == good
    assert not [p.name for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".staged", ".pending"))]
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 0  # and it goes on


@pytest.mark.parametrize("where", ["lock", "record"])
def test_a_full_disk_when_a_new_run_starts_leaves_no_folder(tmp_path: Path, capsys, monkeypatch, where: str) -> None:
    from resnets.runs import lock

    data = write_image_tree(tmp_path / "data")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(*((lock, "describe_holder", full) if where == "lock" else (guard, "_write_all", full)))
    out = tmp_path / "runs" / "new"
    argv = ["train", "--model", "resnet20", "--data", str(data), "--out", str(out), "--max-steps", "1", "-b", "4"]
    one_line(argv, capsys, "No space left on device")
    assert not (tmp_path / "runs").exists()  # neither the run folder nor its parent, both made for it


@pytest.mark.parametrize(
    "manifest", ["{}", "[]", '{"format": "resnets-checkpoint-1", "step": 2, "files": []}', "1e999"]
)
@pytest.mark.parametrize("command", ["eval", "export", "resume"])
def test_a_manifest_of_the_wrong_shape_is_one_line(run_dir: Path, capsys, manifest: str, command: str) -> None:
    (run_dir / "checkpoints" / "last.json").write_text(manifest)
    argv = {
        "eval": ["eval", str(run_dir)],
        "export": ["export", str(run_dir), "--format", "safetensors"],
        "resume": ["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"],
    }[command]
    one_line(argv, capsys, "last.json")


def test_a_snapshot_list_of_the_wrong_shape_is_one_line(run_dir: Path, capsys) -> None:
    from resnets.errors import CheckpointError

    (run_dir / "checkpoints" / "snapshots.json").write_text('{"files": {"step-x.safetensors": 1}}')
    assert main(["eval", str(run_dir)]) == 0  # the last checkpoint needs no snapshot list
    with pytest.raises(CheckpointError, match=r"snapshots\.json.*restore it, or remove it"):
        _ = open_run(run_dir).snapshots
    with pytest.raises(CheckpointError, match=r"snapshots\.json"):
        open_run(run_dir, checkpoint="step-1")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["data"].update(classes=["ant"]), "data.classes"),
        (lambda r: r["data"].update(classes=["ant", "ant", "bee"]), "distinct"),
        (lambda r: r.update(data=[]), "'data'"),
        (lambda r: r.update(model=7), "'model'"),
        (lambda r: r["data"].update(mean=[float("nan")]), "data.mean"),
        (lambda r: r["data"].update(std=[0.0]), "data.std"),
        (lambda r: r["data"].update(std=[-1.0]), "data.std"),
        (lambda r: r["data"].update(layout="sequence"), "data.layout"),
        (lambda r: r.update(format="resnets-run-2"), "format"),
        (lambda r: r.update(in_channels=3), "in_channels"),
        (lambda r: r.pop("num_classes"), "num_classes"),
    ],
)
def test_a_record_that_breaks_its_schema_is_one_line_naming_the_field(run_dir: Path, capsys, change, expected) -> None:
    edit_record(run_dir, change)
    for argv in (["eval", str(run_dir)], ["export", str(run_dir), "--format", "safetensors"]):
        line = one_line(argv, capsys, "config.json", expected)
        assert "expected" in line


def test_text_that_is_not_utf8_is_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"lr: 0.1 \xff\xfe\n")
    one_line(["train", "--config", str(config), "--print-config"], capsys, "not UTF-8", "0xff")
    (run_dir / "config.json").write_bytes(b'{"model": "\xff"}')
    one_line(["eval", str(run_dir)], capsys, "config.json", "not UTF-8")


def test_a_symlink_loop_in_a_class_folder_is_one_line(tmp_path: Path, capsys) -> None:
    data = write_image_tree(tmp_path / "data")
    (data / "train" / "loop").symlink_to(data / "train" / "loop")
    (data / "train" / "ant" / "9.png").symlink_to(data / "train" / "ant" / "9.png")
    argv = ["train", "--model", "resnet20", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "1"]
    one_line([*argv, "--quiet"], capsys, "symlink loop", "loop")
    (data / "train" / "loop").unlink()
    one_line([*argv, "--quiet"], capsys, "9.png")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--lr", "1e300", "lr must be at most 3.403e+38, the largest float32 a step can use, got 1e+300"),
        ("--weight-decay", "1e39", "decay must be at most 3.403e+38"),
        ("--momentum", "2", "momentum must be a finite number in [0, 1), got 2"),
        ("--momentum", "1", "momentum must be a finite number in [0, 1), got 1"),
    ],
)
def test_values_torch_cannot_step_with_are_refused(
    tmp_path: Path, capsys, flag: str, value: str, expected: str
) -> None:
    one_line(["train", flag, value, "--print-config"], capsys, expected)
    one_line(["train", "--opt", "adamw", flag, value, "--print-config"], capsys, expected)


def test_an_overflowing_optimiser_step_is_a_divergence_at_its_step(tmp_path: Path) -> None:
    from resnets.errors import TrainingDivergedError
    from resnets.train.divergence import overflow_is_divergence

    parameter = torch.nn.Parameter(torch.ones(2))
    parameter.grad = torch.ones(2)
    optimizer = torch.optim.SGD([parameter], lr=1e39)
    overflowed = r"optimiser step 7 overflowed float32 \(lr 1e\+39"
    with pytest.raises(TrainingDivergedError, match=overflowed) as error, overflow_is_divergence(7, 1e39, tmp_path):
        optimizer.step()
    assert error.value.step == 7
    with pytest.raises(RuntimeError, match="something else"), overflow_is_divergence(1, 0.1, tmp_path):
        raise RuntimeError("something else")


def _signal_at(argv: list[str], sig: int, after: float, cwd: Path) -> tuple[int, list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "resnets", *argv], cwd=cwd, stderr=subprocess.PIPE, text=True, env=env
    )
    time.sleep(after)
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    return child.returncode, err.strip().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_in_the_first_seconds_is_one_line_and_status_130(tmp_path: Path, sig: int) -> None:
    data = write_image_tree(tmp_path / "data")
    argv = ["train", "--model", "resnet20", "--data", str(data), "--out", "run", "--max-steps", "500", "--quiet"]
    for after in (0.2, 0.6, 1.5):  # while the command is imported, while torch is, while the data loads
        code, lines = _signal_at(argv, sig, after, tmp_path)
        assert code == 130 and len(lines) == 1, (after, code, lines)
        assert lines[0].startswith("resnets") and "Traceback" not in lines[0], lines
        run = tmp_path / "run"
        assert not run.exists() or (run / "checkpoints" / "last.json").exists(), sorted(run.rglob("*"))


# Wrong acceptances ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda r: r["train"].update(seed=5), ["train.seed 0 -> 5"]),
        (lambda r: r["train"]["recipe"].update(batch_size=2), ["train.recipe.batch_size 4 -> 2"]),
        (lambda r: r["train"].update(data="/elsewhere"), ["train.data"]),
        (lambda r: r["data"].update(classes=["x", "y", "z"]), ["data.classes"]),
    ],
    ids=["seed", "batch", "data", "classes"],
)
def test_resume_refuses_a_record_edited_since_its_checkpoint(run_dir: Path, capsys, change, fields) -> None:
    edit_record(run_dir, change)
    line = one_line(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"], capsys, "was changed since")
    for field in fields:
        assert field in line, line


def test_resume_accepts_what_a_flag_may_change_and_a_reformatted_record(run_dir: Path, capsys) -> None:
    record = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(record, indent=4))  # the same fields, other bytes
    edit_record(run_dir, lambda r: r["train"]["recipe"].update(lr=0.05))  # as --lr 0.05 would
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["recipe"]["lr"] == 0.05


def _export_with(run_dir: Path, tmp_path: Path, change) -> Path:
    """A safetensors export of the run whose metadata record was changed by ``change``."""
    path = tmp_path / "model.safetensors"
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(path)]) == 0
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    record = json.loads(metadata["record"])
    change(record, metadata)
    save_file(load_file(str(path)), str(path), metadata={**metadata, "record": json.dumps(record)})
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r, m: r["data"].update(std=[0.0]), "data.std"),
        (lambda r, m: r["data"].update(mean=[float("nan")]), "data.mean"),
        (lambda r, m: r["data"].update(mean=[1e30], std=[1e-12]), "data.mean"),
        (lambda r, m: r.update(num_classes=10**9), "num_classes"),
        (lambda r, m: m.update(format="resnets-checkpoint-9"), "format"),
    ],
    ids=["std-0", "nan-mean", "overflow", "classes", "format"],
)
def test_export_metadata_that_would_give_nan_predictions_is_refused(
    run_dir: Path, tmp_path: Path, capsys, change, expected: str
) -> None:
    path = _export_with(run_dir, tmp_path, change)
    (image,) = write_image_tree(tmp_path / "images", ("a",), per_class=1).glob("train/a/*.png")
    capsys.readouterr()
    one_line(["predict", str(path), str(image)], capsys, "model.safetensors", expected)
    one_line(["eval", str(path)], capsys, expected)


@pytest.mark.slow
def test_torchscript_and_onnx_metadata_go_through_the_same_schema(run_dir: Path, tmp_path: Path, capsys) -> None:
    from resnets.io.model_files import RECORD_KEY, TORCHSCRIPT_RECORD

    pytest.importorskip("onnxscript")
    scripted = tmp_path / "m.torchscript.pt"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(scripted)]) == 0
    module = torch.jit.load(str(scripted))
    record = json.loads((run_dir / "config.json").read_text())
    record["data"]["std"] = [0.0]
    torch.jit.save(module, str(scripted), _extra_files={TORCHSCRIPT_RECORD: json.dumps(record)})
    one_line(["eval", str(scripted)], capsys, "data.std")
    torch.jit.save(module, str(scripted), _extra_files={TORCHSCRIPT_RECORD: b"\xff\xfe"})
    one_line(["eval", str(scripted)], capsys, "not UTF-8")

    import onnx

    exported = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(exported)]) == 0
    proto = onnx.load(str(exported))
    for entry in proto.metadata_props:
        if entry.key == RECORD_KEY:
            entry.value = json.dumps({**record, "data": {**record["data"], "std": [1.0], "classes": ["a"]}})
    onnx.save(proto, str(exported))
    one_line(["eval", str(exported)], capsys, "data.classes")


def test_eval_of_nan_weights_writes_json_without_nan(run_dir: Path, capsys) -> None:
    checkpoints = run_dir / "checkpoints"
    weights = load_file(str(checkpoints / "last.safetensors"))
    weights = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(checkpoints / "last.safetensors"), metadata={"format": "resnets-checkpoint-1"})
    manifest = json.loads((checkpoints / "last.json").read_text())
    manifest["files"]["last.safetensors"] = sha256_file(checkpoints / "last.safetensors")
    (checkpoints / "last.json").write_text(json.dumps(manifest))
    assert main(["eval", str(run_dir)]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in eval.json")

    report = json.loads((run_dir / "eval-test" / "eval.json").read_text(), parse_constant=refuse)
    assert report["loss"] is None


@pytest.mark.parametrize("label", ["-1", "1.5", "nan", "1e400", "-0.5"])
def test_a_csv_label_that_is_a_number_but_not_a_class_index_is_refused(tmp_path: Path, capsys, label: str) -> None:
    path = tmp_path / "v.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,4,1\n5,6,{label}\n7,8,1\n")
    argv = ["train", "--model", "resmlp_plain_20", "--data", str(path), "--out", str(tmp_path / "r"), "--quiet"]
    one_line([*argv, "--max-steps", "1"], capsys, f"{path}:4", f"label {label!r} is a number but not a class index")


def test_numeric_labels_written_as_floats_are_class_indices(tmp_path: Path) -> None:
    from resnets.data.tabular import encode_labels

    targets, classes = encode_labels(np.array(["0", "1.0", "2", " 1 "]), "x.csv", first_line=2)
    assert targets.tolist() == [0, 1, 2, 1] and classes == ["0", "1", "2"]
    targets, classes = encode_labels(np.array([0.0, 2.0]), "x.npz")
    assert targets.tolist() == [0, 2] and classes == ["0", "1", "2"]
    assert encode_labels(np.array(["cat", "-1"]), "x.csv")[1] == ["-1", "cat"]  # a name among them: all names


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"y": np.array([0.0, 1.5, 1.0, 0.0])}, "label '1.5'"),
        ({"y": np.array([0, 1, 1, 0]), "classes": np.array(["a"])}, "1 class names, but the labels go up to 1"),
        ({"y": np.array([0, 1, 1, 0]), "classes": np.array(["a", "a"])}, "distinct"),
        ({"y": np.array([True, False, True, False])}, "labels must be class indices or names"),
    ],
    ids=["float-label", "short-classes", "repeated-classes", "bool-labels"],
)
def test_npz_label_columns_go_through_the_same_checks(tmp_path: Path, capsys, arrays, expected: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(8, dtype=np.float32).reshape(4, 2), **arrays)
    argv = ["train", "--model", "resmlp_plain_20", "--data", str(path), "--out", str(tmp_path / "r"), "--quiet"]
    one_line([*argv, "--max-steps", "1", "--batch-size", "2"], capsys, expected)


def test_class_names_with_terminal_escapes_are_shown_escaped(tmp_path: Path, capsys) -> None:
    data = write_image_tree(tmp_path / "data", ("ant\x1b[2J", "bee\nrm -rf"))
    run = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--data", str(data), "--out", str(run), "--max-steps", "1"]
    assert main([*argv, "--batch-size", "4", "--quiet"]) == 0
    image = next((data / "test").rglob("*.png"))
    capsys.readouterr()
    for output in ("text", "csv"):
        assert main(["predict", str(run), str(image), "--format", output]) == 0
        printed = capsys.readouterr().out
        assert "\x1b" not in printed and "\\x1b[2J" in printed and "bee\\x0arm -rf" in printed
    assert main(["eval", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "ant\\x1b[2J" in printed


def test_a_csv_cell_is_never_a_formula() -> None:
    from resnets.io.text import csv_cell, printable

    assert [csv_cell(x) for x in ("=cmd()", "+1+1", "@SUM(A1)", "-x", "-1", "cat")] == [
        "'=cmd()",
        "'+1+1",
        "'@SUM(A1)",
        "'-x",
        "-1",
        "cat",
    ]
    assert printable("a\u202eb\x9bc\td") == "a\\u202eb\\x9bc\\x09d"


# The last resort -----------------------------------------------------------------------------------------


def test_an_exception_that_escapes_is_a_bug_with_its_traceback_in_a_file(tmp_path: Path, capsys, monkeypatch) -> None:
    import resnets.cli.models as models_command

    def broken(args: object) -> int:
        raise KeyError("no such key")

    real = models_command.register

    def register(subparsers):
        real(subparsers)
        subparsers.choices["models"].set_defaults(func=broken)

    monkeypatch.setattr(models_command, "register", register)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    capsys.readouterr()
    assert main(["models"]) == 70
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("resnets models: internal error (a bug): KeyError: 'no such key' (traceback in ")
    (saved,) = tmp_path.glob("resnets-internal-error-*.txt")
    assert str(saved) in err and "Traceback (most recent call last)" in saved.read_text()
    assert "raise KeyError" in saved.read_text()


def test_the_traceback_file_is_new_and_passes_over_a_taken_or_linked_name(tmp_path: Path, capsys, monkeypatch) -> None:
    import types

    from resnets import cli

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "resnets-internal-error-T-link.txt").symlink_to(victim)
    (tmp_path / "resnets-internal-error-T-taken.txt").write_text("an earlier traceback")
    names = iter(["link", "taken", "fresh"])
    monkeypatch.setattr(cli, "secrets", types.SimpleNamespace(token_hex=lambda n: next(names)))
    monkeypatch.setattr(cli, "time", types.SimpleNamespace(strftime=lambda form: "T"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    fresh = tmp_path / "resnets-internal-error-T-fresh.txt"
    assert cli._save_traceback(KeyError("x")) == f"traceback in {fresh}; please report it"
    assert "KeyError: 'x'" in fresh.read_text() and fresh.stat().st_mode & 0o777 == 0o600  # private, as mkstemp's
    assert victim.read_text() == "keep me"
    assert (tmp_path / "resnets-internal-error-T-taken.txt").read_text() == "an earlier traceback"


def test_a_path_the_system_refuses_is_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    long = "a/" * 3000  # longer than PATH_MAX: the first stat fails with ENAMETOOLONG
    one_line(["eval", long], capsys, "cannot use 'a/a/", "...", "File name too long")
    one_line(["export", str(run_dir), "--format", "safetensors", "--out", "c" * 300], capsys, "File name too long")
    config = tmp_path / "nul.yaml"
    config.write_text('data: "a\\0b"\n')  # YAML's \0: a path no system call takes
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "r"), "--max-steps", "1", "--quiet"]
    one_line(argv, capsys, "'a\\x00b'")
    assert not (tmp_path / "r").exists()
