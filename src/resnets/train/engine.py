"""The training loop: one loop for CPU and CUDA, resumable bit for bit, stopping cleanly on signals.

data -> BatchLoader -> model -> loss -> SGD step with a per-iteration learning rate -> running metrics;
at each epoch end: evaluate, write the metrics and curves, save the last (and best) checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.errors import ConfigError, ResnetsError, TrainingDivergedError
from resnets.train.checkpoint import load_checkpoint, save_checkpoint
from resnets.train.config import TrainConfig, apply_overrides, config_from_dict
from resnets.train.device import resolve_device, resolve_precision
from resnets.train.distributed import Distributed
from resnets.train.evaluate import evaluate
from resnets.train.progress import Progress
from resnets.train.run_dir import RunDir, default_run_path, environment
from resnets.train.schedule import LRSchedule, weighted_depth
from resnets.train.session import Session
from resnets.train.signals import StopRequests, TrainingInterrupted
from resnets.train.state import TrainState, rng_state, set_rng_state
from resnets.train.tensorboard import TensorBoard

#: Settings that a resumed run cannot change without breaking what its checkpoint means.
FROZEN_ON_RESUME = ("model", "model_options", "data", "data_dir", "val_size", "val_fraction", "image_size",
                    "seed", "batch_size", "in_channels")  # fmt: skip


def stop_step(config: TrainConfig, steps_per_epoch: int) -> int:
    """The iteration at which training stops: the smaller of epochs * steps per epoch and max_steps."""
    r = config.recipe
    limits = [r.max_steps] if r.max_steps is not None else []
    if r.epochs is not None:
        limits.append(round(r.epochs * steps_per_epoch))
    return min(limits)


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The saved configuration of ``run_dir`` with ``overrides`` (e.g. a larger max_steps) applied."""
    run = RunDir(run_dir)
    if not (run.path / "config.json").exists():
        raise ConfigError(f"{str(run.path)!r} is not a run directory (no config.json); give the --out of a run")
    saved = run.read_json("config.json")
    config = config_from_dict(saved["train"])
    overrides = dict(overrides or {})
    for key in FROZEN_ON_RESUME:
        old = getattr(config.recipe, key) if key == "batch_size" else getattr(config, key)
        if key in overrides and overrides[key] is not None and overrides[key] != old:
            raise ConfigError(
                f"cannot change {key} when resuming {str(run.path)!r} (saved {old!r}, given {overrides[key]!r}); "
                f"start a new run with --out instead"
            )
        overrides.pop(key, None)
    # How this session reports is not part of the run: quiet and threads come from this command only.
    config = replace(config, quiet=False, threads=None)
    config = apply_overrides(config, overrides, "--resume options")
    return replace(config, out=str(run.path))


def train(config: TrainConfig, *, data=None, resume: bool = False) -> dict[str, Any]:
    """Train as ``config`` says and return the summary (also written to summary.json).

    ``data`` is a ready :class:`resnets.data.DataBundle` (tests, notebooks); otherwise ``config.data`` is
    loaded. With ``resume``, ``config.out`` is an existing run directory whose last checkpoint is continued
    (build the config with :func:`resume_config`).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    dist = Distributed.from_env()
    device = resolve_device(config.device) if not dist.active else dist.device(config.device)
    precision = resolve_precision(device, config.amp, config.channels_last)
    session = Session.build(config, data, precision, dist)
    model, loader = session.model, session.train_loader
    steps_per_epoch = len(loader) // dist.world_size
    if steps_per_epoch == 0:
        raise ResnetsError(
            f"the training split has {len(session.bundle.train.targets)} samples, fewer than one batch of "
            f"{config.recipe.batch_size} per process; lower --batch-size"
        )
    last_step = stop_step(config, steps_per_epoch)
    total_epochs = math.ceil(last_step / steps_per_epoch)
    r = config.recipe
    optimizer = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                                weight_decay=r.weight_decay)  # fmt: skip
    schedule = LRSchedule(r, steps_per_epoch=steps_per_epoch, total_steps=last_step, depth=weighted_depth(model))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)

    run = RunDir(config.out or default_run_path(config.model, config.data))
    state, rows = TrainState(), []
    if resume:
        saved = load_checkpoint(run.checkpoints, model)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        if "scaler" in saved and precision.needs_scaler:
            scaler.load_state_dict(saved["scaler"])
        state = TrainState(**saved["train"])
        set_rng_state(saved["rng"])
        # Rows after the checkpoint (a kill between the two writes) and a partial epoch's row go: they are redone.
        rows = [row for row in run.read_metrics() if row["step"] < state.step or (row["step"] == state.step and state.batch == 0)]
    elif (run.checkpoints / "last.json").exists():
        raise ConfigError(f"{str(run.path)!r} already holds a run; continue it with --resume {run.path} or choose another --out")
    if dist.is_main:
        run.create()
        run.write_json("config.json", session.run_config(config, device, precision))
        if not (run.path / "env.json").exists():
            run.write_json("env.json", environment(device))
    model = dist.wrap(model)

    def save(best: bool = False) -> None:
        if dist.is_main:
            payload = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": rng_state(),
                       "train": state.to_dict(), "step": state.step, "epoch": state.epoch, "batch": state.batch}  # fmt: skip
            if precision.needs_scaler:
                payload["scaler"] = scaler.state_dict()
            save_checkpoint(run.checkpoints, dist.unwrap(model), config.model, payload, best=best)

    def evaluate_and_record() -> dict[str, Any]:
        test_loss, test_error = evaluate(model, session.test_loader, precision) if session.test_loader else (math.nan, math.nan)
        row = {"epoch": state.epoch if state.batch == 0 else round(state.epoch + state.batch / steps_per_epoch, 4),
               "step": state.step, "lr": schedule.lr(max(0, state.step - 1)), "train_loss": state.train_loss,
               "train_error": state.train_error, "test_loss": test_loss, "test_error": test_error,
               "images_per_s": state.seen / max(state.epoch_time_s, 1e-9), "epoch_time_s": state.epoch_time_s,
               "wall_time_s": state.wall_time_s + (time.perf_counter() - session_start)}  # fmt: skip
        if session.val_loader is not None:
            row["val_loss"], row["val_error"] = evaluate(model, session.val_loader, precision)
        return row

    board = TensorBoard.open(run.path / "tensorboard") if config.tensorboard and dist.is_main else None
    progress = Progress(config.quiet or not dist.is_main, total_epochs, steps_per_epoch)
    session_start = time.perf_counter()
    model.train()
    with StopRequests() as stop:
        while state.step < last_step:
            if state.batch == 0:
                state.start_epoch()
            progress.start_epoch(state.epoch, state.batch)
            tick = time.perf_counter()
            for x, y in dist.batches(loader, state.epoch, state.batch):
                lr = schedule.lr(state.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with precision.autocast():
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    progress.close()
                    kept = f"the last good checkpoint (step {_saved_step(run)}) is kept in {run.checkpoints}" if _saved_step(run) is not None else "no checkpoint had been saved yet"
                    raise TrainingDivergedError(
                        f"the loss became {loss_value} at step {state.step + 1} (epoch {state.epoch + 1}, lr {lr:g}); "
                        f"{kept}; lower the learning rate (--lr) or add a warm-up (--set warmup_epochs=1)"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                batch_errors = (logits.detach().argmax(1) != y).sum().item()
                schedule.observe(100.0 * batch_errors / y.numel())
                state.step, state.batch = state.step + 1, state.batch + 1
                state.loss_sum += loss_value * y.numel()
                state.errors += batch_errors
                state.seen += y.numel()
                now = time.perf_counter()
                state.epoch_time_s += now - tick
                tick = now
                progress.update(state, lr)
                if stop.requested or state.step >= last_step or state.batch >= steps_per_epoch:
                    break
            progress.close()
            if state.batch >= steps_per_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
                if state.epoch % r.eval_every == 0 or state.step >= last_step:
                    state.wall_time_s += time.perf_counter() - session_start
                    session_start = time.perf_counter()
                    row = evaluate_and_record()
                    rows.append(row)
                    selection = row.get("val_error", row["test_error"])
                    best = selection is not None and math.isfinite(selection) and selection < state.best_error
                    if best:
                        state.best_error, state.best_epoch = selection, state.epoch
                    if dist.is_main:
                        run.write_metrics(rows)
                        progress.write_epoch(row)
                        if board is not None:
                            board.write(row)
                        _plot(run, rows)
                    save(best=best)
            if stop.requested:
                state.wall_time_s += time.perf_counter() - session_start
                save()
                raise TrainingInterrupted(
                    f"stopped by signal {stop.signal} at step {state.step}; checkpoint saved, continue with "
                    f"`resnets train --resume {run.path}`"
                )
    state.wall_time_s += time.perf_counter() - session_start
    session_start = time.perf_counter()
    if state.batch != 0:  # stopped mid-epoch (max_steps): evaluate and save where it stands
        rows.append(evaluate_and_record())
        if dist.is_main:
            run.write_metrics(rows)
            _plot(run, rows)
        save()
    if board is not None:
        board.close()
    summary = _summary(config, session, state, rows, run, steps_per_epoch)
    if dist.is_main:
        run.write_json("summary.json", summary)
    dist.close()
    return summary


def _saved_step(run: RunDir) -> int | None:
    path = run.checkpoints / "last.json"
    return RunDir(run.checkpoints).read_json("last.json")["step"] if path.exists() else None


def _plot(run: RunDir, rows: list[dict[str, Any]]) -> None:
    from resnets.reports.curves import plot_curves  # matplotlib loads only when a run writes curves

    plot_curves(rows, run.path / "curves.png", title=run.path.name)


def _summary(config, session, state: TrainState, rows, run: RunDir, steps_per_epoch: int) -> dict[str, Any]:
    last = rows[-1] if rows else {}
    test_error = last.get("test_error", math.nan)
    test_error = math.nan if test_error is None else test_error
    tested = [(row["test_error"], row["epoch"]) for row in rows if row.get("test_error") is not None]
    best_test = min(tested) if tested else (math.nan, None)
    summary = {
        "model": config.model,
        "data": session.bundle.name,
        "params": sum(p.numel() for p in session.model.parameters()),
        "test_accuracy": 100.0 - test_error,
        "test_error": test_error,
        "test_loss": last.get("test_loss", math.nan),
        "train_error": last.get("train_error", math.nan),
        "epochs": round(state.epoch + state.batch / steps_per_epoch, 4),
        "steps": state.step,
        "wall_time_s": state.wall_time_s,
        "images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else math.nan,
        "best_test_error": best_test[0],
        "best_epoch": best_test[1],
        "run_dir": str(run.path),
    }
    if "val_error" in last:
        summary["val_error"] = last["val_error"]
        summary["best_val_error"], summary["best_val_epoch"] = state.best_error, state.best_epoch
    return summary


def final_line(summary: dict[str, Any]) -> str:
    return (
        f"test accuracy: {summary['test_accuracy']:.2f}% (test error {summary['test_error']:.2f}%) after "
        f"{summary['epochs']:g} epochs, {summary['steps']} steps, {summary['wall_time_s']:.0f} s; "
        f"run dir: {summary['run_dir']}"
    )
