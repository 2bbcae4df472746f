"""The training loop: one loop for CPU and CUDA, resumable bit for bit, stopping cleanly on signals.

data -> BatchLoader -> model -> loss -> SGD/AdamW step with a per-iteration learning rate -> running metrics;
at each epoch end: evaluate, write the metrics and curves, save the last (and best) checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.compute import evaluation_flops, machine_peak, training_flops
from resnets.device import resolve_device, resolve_precision
from resnets.errors import ConfigError, ResnetsError, RunDirError, TrainingDivergedError
from resnets.inference import with_fast_model
from resnets.metrics import evaluate
from resnets.runs.checkpoint import committed_step, restore_checkpoint, save_checkpoint, save_snapshot
from resnets.runs.checkpoint import has_checkpoint as checkpoint_exists
from resnets.runs.directory import RunDir, claim_run_dir, default_run_path, environment
from resnets.runs.lock import RunLock
from resnets.runs.memory import check_model_memory, check_run_memory
from resnets.runs.record import RECORD_FILE, read_record
from resnets.train.banner import banner_lines, describe_device
from resnets.train.config import TrainConfig, apply_overrides, config_from_dict
from resnets.train.distributed import Distributed
from resnets.train.divergence import overflow_is_divergence
from resnets.train.mixing import make_mixing, mixing_rng
from resnets.train.optim import set_lr
from resnets.train.progress import Progress
from resnets.train.resume import refuse_record_edits
from resnets.train.session import Session, resolved_path
from resnets.train.signals import StopRequests, TrainingInterrupted
from resnets.train.state import RunCounters
from resnets.train.summary import run_summary
from resnets.train.tensorboard import TensorBoard
from resnets.train.training_state import TrainingState

#: Settings that a resumed run cannot change without breaking what its checkpoint means.
FROZEN_ON_RESUME = (
    "model",
    "model_options",
    "data",
    "data_dir",
    "label_column",
    "val_size",
    "val_fraction",
    "image_size",
    "seed",
    "batch_size",
    "optimizer",
    "decay_norm_and_bias",
    "in_channels",
)
RECIPE_KEYS_FROZEN = ("batch_size", "optimizer", "decay_norm_and_bias")  # the optimiser state's shape depends on them


def stop_step(config: TrainConfig, steps_per_epoch: int) -> int:
    """The iteration at which training stops: the smaller of epochs * steps per epoch and max_steps."""
    r = config.recipe
    limits = [r.max_steps] if r.max_steps is not None else []
    if r.epochs is not None:
        limits.append(round(r.epochs * steps_per_epoch))
    return min(limits)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to continue (either generation): what --auto-resume asks."""
    return checkpoint_exists(RunDir(run_dir).checkpoints)


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The saved configuration of ``run_dir`` with ``overrides`` (e.g. a larger max_steps) applied."""
    run = RunDir(run_dir)
    if not (run.path / RECORD_FILE).exists():
        raise ConfigError(f"{str(run.path)!r} is not a run directory (no {RECORD_FILE}); give the --out of a run")
    refuse_record_edits(run.path, FROZEN_ON_RESUME, RECIPE_KEYS_FROZEN)  # the record is the one it checkpointed
    config = config_from_dict(read_record(run.path).train)
    overrides = dict(overrides or {})
    if overrides.get("recipe") not in (None, config.recipe.name):
        raise ConfigError(
            f"cannot switch recipe when resuming {str(run.path)!r} (saved {config.recipe.name!r}, given "
            f"{overrides['recipe']!r}); override single keys (--lr, --epochs, --set KEY=VALUE) instead"
        )
    overrides.pop("recipe", None)
    for key in FROZEN_ON_RESUME:
        old = getattr(config.recipe, key) if key in RECIPE_KEYS_FROZEN else getattr(config, key)
        given = overrides.get(key)
        if key in ("data", "data_dir") and given is not None:
            given, old = resolved_path(str(given)), resolved_path(old)  # the same folder, however it is named
        if given is not None and given != old:
            flag = "--model-option" if key == "model_options" else "--" + key.replace("_", "-")  # as the user typed it
            raise ConfigError(
                f"cannot change {flag} when resuming {str(run.path)!r} (saved {old!r}, given {given!r}); "
                f"start a new run with --out instead"
            )
        overrides.pop(key, None)
    # How this session reports is not part of the run: quiet, threads and log_every come from this command only.
    config = replace(config, quiet=False, threads=None, log_every=None)
    config = apply_overrides(config, overrides, "--resume options")
    return replace(config, out=str(run.path))


def train(config: TrainConfig, *, data=None, resume: bool = False) -> dict[str, Any]:
    """Train as ``config`` says and return the summary (also written to summary.json).

    ``data`` is a ready :class:`resnets.data.DataBundle` (tests, notebooks); otherwise ``config.data`` is
    loaded. With ``resume``, ``config.out`` is an existing run directory whose last checkpoint is continued
    (build the config with :func:`resume_config`).
    """
    return Trainer(config, data, resume).run()


class Trainer:
    """One training session of a run: set up (or restore), loop over steps, record each epoch."""

    def __init__(self, config: TrainConfig, data: Any, resume: bool) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config, r = config, config.recipe
        self.dist = dist = Distributed.from_env()
        device = dist.device(config.device) if dist.active else resolve_device(config.device)
        self.precision = resolve_precision(device, config.amp, config.channels_last)
        check_model_memory(config.model, config.model_options, training=True, what="training")  # before the data
        self.session = session = Session.build(config, data, self.precision, resume=resume)
        check_run_memory(session.record, min(r.batch_size, len(session.bundle.train)), training=True, what="training")
        self.steps_per_epoch = len(session.train_loader) // dist.world_size
        if self.steps_per_epoch == 0:
            raise ResnetsError(
                f"the training split has {len(session.bundle.train)} samples, fewer than one batch of "
                f"{r.batch_size} per process; lower --batch-size"
            )
        self.last_step = stop_step(config, self.steps_per_epoch)
        model = session.model
        self.mixing = make_mixing(r, session.train_loader.layout)  # before the run directory: a refusal writes nothing
        self.training = TrainingState(
            model,
            r,
            steps_per_epoch=self.steps_per_epoch,
            last_step=self.last_step,
            world_size=dist.world_size,
            scaler=torch.amp.GradScaler(device.type, enabled=self.precision.needs_scaler),
        )
        self.macs = session.macs_per_sample()  # the model's multiply-adds per sample: the run's compute is counted
        if config.snapshot_every < 0:
            raise ConfigError(f"snapshot_every must be 0 (off) or a number of epochs >= 1, got {config.snapshot_every}")
        self.run_dir, self.lock = self._claim_run_dir()
        self.rows: list[dict[str, Any]] = []
        self.steps: list[tuple[int, float, float, float]] = []  # (step, lr, loss, error %) of every step
        try:
            if resume:
                self._restore()
            elif has_checkpoint(self.run_dir.path):
                raise ConfigError(
                    f"{str(self.run_dir.path)!r} already holds a run; continue it with --resume "
                    f"{self.run_dir.path} or choose another --out"
                )
            if dist.is_main:
                self.run_dir.create()
                self.run_dir.write_json(RECORD_FILE, session.record.to_dict())
                if not resume and (0 in config.snapshot_steps or config.snapshot_every > 0):
                    save_snapshot(self.run_dir.checkpoints, model, config.model, 0)
                if not (self.run_dir.path / "env.json").exists():
                    self.run_dir.write_json("env.json", environment(device))
            self.board = None  # made here, in the try: a RUN/tensorboard the guard refuses (a link) lets the lock go
            if config.tensorboard and dist.is_main:
                self.board = TensorBoard.open(self.run_dir.path / "tensorboard", after_step=self.state.step)
        except BaseException:
            if self.lock is not None:
                self.lock.abandon()  # the lock goes, and a folder made for a run that never started goes too
            raise
        self.model = dist.wrap(model)
        if config.compile:  # after DDP, as PyTorch recommends; dist.unwrap gives the plain model back for saving
            from resnets.train.compiling import compile_model

            self.model = compile_model(self.model, self.precision.device)
        quiet = config.quiet or not dist.is_main
        if not quiet:  # what will run, once, before the first step
            lines = banner_lines(
                config,
                model=model,
                bundle=session.bundle,
                layout=session.record.data.layout,
                precision=self.precision,
                device_name=describe_device(self.precision.device),
                steps_per_epoch=self.steps_per_epoch,
                last_step=self.last_step,
                run_dir=self.run_dir.path,
                resume_step=self.state.step if resume else None,
                world_size=dist.world_size,
                loaded=session.loaded,
            )
            print("\n".join(lines), file=sys.stderr, flush=True)
        self.progress = Progress(
            quiet,
            steps_per_epoch=self.steps_per_epoch,
            last_step=self.last_step,
            eval_every=r.eval_every,
            log_every=config.log_every,
        )
        self.session_start = time.perf_counter()

    @property
    def state(self) -> RunCounters:
        """Where the run stands: the training state's counters."""
        return self.training.counters

    def _restore(self) -> None:
        restored = restore_checkpoint(self.run_dir.checkpoints, self.session.model)
        if restored.warning and self.dist.is_main:  # e.g. last.safetensors corrupt: one epoch lost, not the run
            print(f"resnets train: warning: {restored.warning}", file=sys.stderr)
        self.training.load_state_dict(restored.state, str(self.run_dir.path))
        state = self.state
        # Rows after the checkpoint (a kill between two writes) and a partial epoch's row go: they are redone;
        # unless that row chose the best checkpoint, whose figures summary.json reports.
        self.rows = [
            row
            for row in self.run_dir.read_metrics()
            if row["step"] < state.step
            or (row["step"] == state.step and (state.batch == 0 or row["epoch"] == state.best_epoch))
        ]
        self.steps = [
            (row["step"], row["lr"], row["loss"], row["error"])
            for row in self.run_dir.read_steps()
            if row["step"] <= state.step
        ]

    def run(self) -> dict[str, Any]:
        """Train to the last step; the run directory's lock is let go however this ends (done, failed, stopped)."""
        try:
            return self._run()
        finally:
            self._release_run_dir()

    def _claim_run_dir(self) -> tuple[RunDir, RunLock | None]:
        """The run directory, made ready and locked before anything is read from or written into it.

        Only the writing rank (``dist.is_main``) creates and locks; a second writer (the same --out twice, or
        --resume of a run still training) is refused with the holder's pid instead of mixing two runs' files.
        """
        config = self.config
        if not self.dist.is_main:  # never writes; without --out its name is only shown, never created
            return RunDir(config.out or default_run_path(config.model, config.data)), None
        return claim_run_dir(config.out, config.model, config.data)  # a failed start removes what it made

    def _release_run_dir(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def _run(self) -> dict[str, Any]:
        state = self.state
        self.model.train()
        with StopRequests() as stop:
            while state.step < self.last_step:
                if state.batch == 0:
                    state.start_epoch()
                self._train_until_break(stop)
                if self._advance_epoch():
                    every = self.config.snapshot_every
                    if every and state.epoch % every == 0 and self.dist.is_main:
                        save_snapshot(
                            self.run_dir.checkpoints, self.dist.unwrap(self.model), self.config.model, state.step
                        )
                    if state.epoch % self.config.recipe.eval_every == 0 or state.step >= self.last_step:
                        self._record()
                if self.dist.agree(stop.requested):  # every rank stops at this step, whichever got the signal
                    self._clock()
                    self._save(best=False)
                    self.dist.barrier()  # the other ranks wait for rank 0's checkpoint, then all exit cleanly
                    raise TrainingInterrupted(
                        f"stopped by {f'signal {stop.signal}' if stop.requested else 'a signal to another rank'} at step "
                        f"{state.step}; checkpoint saved, continue with "
                        f"`resnets train --resume {self.run_dir.path}`"
                    )
        if state.batch != 0:  # stopped inside an epoch (max_steps): evaluate and save where it stands
            if self.training.schedule_done:  # the end of the run's curve ends its last epoch (an early stop does not)
                self.training.end_epoch()
            self._record()
        self._clock()
        summary = run_summary(self.config, self.session, state, self.rows, self.run_dir.path, self.steps_per_epoch)
        summary["compute"] = self._compute()
        if self.board is not None:
            self.board.close(self.config, summary)  # with the hyperparameters and the result
        if self.dist.is_main:
            self.run_dir.write_json("summary.json", summary)
        self.dist.close()
        return summary

    def benchmark_steps(self, steps: int) -> float:
        """Run ``steps`` optimiser steps of the real loop, without evaluating or saving; return images/s.

        The figure is measured on the clock that metrics.csv's images_per_s uses, so a benchmark built on
        this method times exactly what ``resnets train`` logs (``resnets bench`` does).
        """
        state, stop_at = self.state, self.last_step
        self.last_step = state.step + steps
        seen, elapsed = 0, 0.0
        self.model.train()
        try:
            with StopRequests() as stop:
                while state.step < self.last_step and not stop.requested:
                    if state.batch == 0:
                        state.start_epoch()
                    before_seen, before_time = state.seen, state.epoch_time_s
                    self._train_until_break(stop)
                    seen, elapsed = seen + state.seen - before_seen, elapsed + state.epoch_time_s - before_time
                    self._advance_epoch()
        finally:
            self.last_step = stop_at
        return seen / max(elapsed, 1e-9)

    def _advance_epoch(self) -> bool:
        """After a stretch of steps: count the epoch if it is complete (the lookahead's pull included)."""
        state = self.state
        if state.batch < self.steps_per_epoch:
            return False
        state.epoch, state.batch = state.epoch + 1, 0
        self.training.end_epoch()
        return True

    def _train_until_break(self, stop: StopRequests) -> None:
        """Steps of the current epoch until it ends, the run's last step, or a stop request.

        Losses and error counts stay on the device: the host reads them once per log interval (``_flush``), not
        twice per step, and under DDP the ranks agree on stopping at those steps only.
        """
        state, r, precision, t = self.state, self.config.recipe, self.precision, self.training
        self.progress.start_epoch(state.epoch, state.batch)
        pending: list[tuple[int, float, torch.Tensor, torch.Tensor, int]] = []  # (step, lr, loss, errors, n)
        tick = time.perf_counter()
        for x, y in self.dist.batches(self.session.train_loader, state.epoch, state.batch):
            lr = t.schedule.lr(state.step)
            set_lr(t.optimizer, lr, state.epoch + state.batch / self.steps_per_epoch)
            mixed, target = None, y  # target: the labels the step's error is counted against
            if self.mixing is not None:  # draws are a function of (seed, step, rank): resuming needs no state
                mixed = self.mixing(x, y, mixing_rng(self.config.seed, state.step, self.dist.rank))
                x, target = mixed.inputs, mixed.dominant()
            with precision.autocast():
                logits = self.model(x)
                if mixed is None:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
                else:
                    loss = mixed.loss(logits.float(), r.label_smoothing)
            t.optimizer.zero_grad(set_to_none=True)
            t.scaler.scale(loss).backward()
            if r.grad_clip_norm > 0:  # clip the true gradients: unscaled first (a no-op without a scaler)
                t.scaler.unscale_(t.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip_norm)
            with overflow_is_divergence(state.step + 1, lr, self.run_dir.checkpoints):
                t.scaler.step(t.optimizer)
            t.scaler.update()
            state.step, state.batch = state.step + 1, state.batch + 1
            t.after_step()
            pending.append((state.step, lr, loss.detach(), (logits.detach().argmax(1) != target).sum(), y.numel()))
            if state.step in self.config.snapshot_steps and self.dist.is_main:
                save_snapshot(self.run_dir.checkpoints, self.dist.unwrap(self.model), self.config.model, state.step)
            last = state.step >= self.last_step or state.batch >= self.steps_per_epoch
            due = last or state.step % self.progress.log_every == 0  # the same steps on every rank
            if due or t.schedule.deep_warmup:  # He et al.'s deep warm-up reads every step's error
                self._flush(pending)  # waits for the device: the queued steps' time lands on the clock below
            now = time.perf_counter()
            state.epoch_time_s, tick = state.epoch_time_s + (now - tick), now
            self.progress.update(state, lr)
            # Ranks agree on stopping at the due steps (one tiny all-reduce per log interval); alone, at once.
            stopping = (self.dist.agree(stop.requested) if due else False) if self.dist.active else stop.requested
            if stopping or last:
                break
        self._flush(pending)
        self.progress.close()

    def _flush(self, pending: list[tuple[int, float, torch.Tensor, torch.Tensor, int]]) -> None:
        """Read the pending steps' losses and error counts in one transfer, log them, and stop at a divergence."""
        if not pending:
            return
        state, schedule = self.state, self.training.schedule
        losses = torch.stack([p[2] for p in pending]).tolist()
        errors = torch.stack([p[3] for p in pending]).tolist()
        taken = list(pending)
        pending.clear()
        for (step, lr, _, _, n), loss, wrong in zip(taken, losses, errors):
            if not math.isfinite(loss):
                self.progress.close()
                self.steps.append((step, lr, loss, math.nan))
                if self.dist.is_main:
                    self.run_dir.write_steps(self.steps)  # the curve up to the divergence, for diagnosis
                raise self._diverged(step, loss, lr)
            schedule.observe(100.0 * wrong / n)
            self.steps.append((step, lr, loss, 100.0 * wrong / n))
            state.loss_sum += loss * n
            state.errors += int(wrong)
            state.seen += n

    def _diverged(self, step: int, loss_value: float, lr: float) -> TrainingDivergedError:
        saved = committed_step(self.run_dir.checkpoints)
        kept = (
            f"the last good checkpoint (step {saved}) is kept in {self.run_dir.checkpoints}"
            if saved is not None
            else "no checkpoint had been saved yet"
        )
        epoch = (step - 1) // self.steps_per_epoch + 1
        return TrainingDivergedError(
            f"the loss became {loss_value} at step {step} (epoch {epoch}, lr {lr:g}); "
            f"{kept}; lower the learning rate (--lr) or add a warm-up (--warmup-epochs 1)",
            step=step,
        )

    def _check_finite(self) -> None:
        """Refuse to save weights or buffers that hold NaN or infinity: a diverged run keeps its last good save.

        The loss can stay finite while BN's running statistics overflow (a large learning rate), so the check
        reads every parameter and buffer, not the loss.
        """
        model = self.dist.unwrap(self.model)
        tensors = [*model.named_parameters(), *model.named_buffers()]
        bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            saved = committed_step(self.run_dir.checkpoints)
            kept = f"the last good checkpoint (step {saved}) is kept" if saved is not None else "nothing was saved"
            raise TrainingDivergedError(
                f"{len(bad)} of {len(tensors)} weight and buffer tensors are not finite at step {self.state.step} "
                f"(first: {bad[0]}); {kept}; lower the learning rate (--lr) or add a warm-up "
                "(--warmup-epochs 1)",
                step=self.state.step,
            )

    def _clock(self) -> None:
        """Move this session's elapsed time into the run's wall time (kept across resumes)."""
        now = time.perf_counter()
        self.state.wall_time_s += now - self.session_start
        self.session_start = now

    def _record(self) -> None:
        """Evaluate, append a metrics row, update the best result, write files, save the checkpoints."""
        self._clock()
        state, session = self.state, self.session
        test_loss, test_error = (math.nan, math.nan)
        if session.test_loader is not None:
            test_loss, test_error = self._measure(session.test_loader)
        epoch = state.epoch if state.batch == 0 else round(state.epoch + state.batch / self.steps_per_epoch, 4)
        row = {
            "epoch": epoch,
            "step": state.step,
            "lr": self.training.schedule.lr(max(0, state.step - 1)),
            "train_loss": state.train_loss,
            "train_error": state.train_error,
            "test_loss": test_loss,
            "test_error": test_error,
            "images_per_s": state.seen / max(state.epoch_time_s, 1e-9),
            "epoch_time_s": state.epoch_time_s,
            "wall_time_s": state.wall_time_s,
        }
        if session.val_loader is not None:
            row["val_loss"], row["val_error"] = self._measure(session.val_loader)
        if (
            self.training.ema is not None
        ):  # the test and val figures are the EMA's (metrics.jsonl; the CSV keeps its columns)
            row["weights"] = "ema"
        self.rows.append(row)
        # Only a validation split chooses a "best" checkpoint: choosing on the test split would bias its error.
        selection = row.get("val_error", math.nan)
        best = math.isfinite(selection) and selection < state.best_error
        if best:
            state.best_error, state.best_epoch = selection, epoch
        if self.dist.is_main:
            with _writing(self.run_dir, "the metrics and curves"):
                self.run_dir.write_metrics(self.rows)
                self.progress.write_epoch(row)
                if self.board is not None:
                    self.board.write(row, self.steps)
                _plot(
                    self.run_dir,
                    self.rows,
                    self.steps,
                    per_epoch=self.steps_per_epoch,
                    model=self.config.model,
                    data=session.bundle.name,
                )
        self._save(best=best)

    def _measure(self, loader: Any) -> tuple[float, float]:
        """(loss, top-1 error %) of a split, measured as ``resnets eval`` measures it after the run."""
        # The fast inference path (folded BatchNorms, the run's layout and precision), as `resnets eval` runs
        # it; never compiled here, since the weights change between evaluations. With an EMA, the average is
        # measured: it is what the weight file holds for eval, predict and export.
        record = self.session.record
        model, batches = with_fast_model(
            self.training.weights_model,
            loader.epoch_batches(0),
            precision=record.precision(self.precision.device),
            tta=record.tta,
        )
        result = evaluate(model, batches, record.num_classes)
        self.state.eval_views += result.n * record.tta.views
        return result.loss, result.top1_error

    def _compute(self) -> dict[str, Any]:
        """The run's counted compute (``resnets.compute``) and its share of this machine's measured peak."""
        trained = self.state.step * self.config.recipe.batch_size * self.dist.world_size
        train_flops = training_flops(self.macs, trained)
        eval_flops = evaluation_flops(self.macs, self.state.eval_views)
        dtype = self.precision.dtype if self.precision.amp else torch.float32
        peak = machine_peak(dtype, torch.get_num_threads(), str(self.precision.device))
        seconds = self.state.wall_time_s
        return {
            "macs_per_sample": self.macs,
            "train_pflop": train_flops / 1e15,
            "eval_pflop": eval_flops / 1e15,
            "pflop": (train_flops + eval_flops) / 1e15,
            "peak_flops": peak,  # measured now, in the run's precision and threads
            "peak_share": (train_flops + eval_flops) / seconds / peak if seconds > 0 and peak > 0 else math.nan,
        }

    def _save(self, best: bool) -> None:
        if not self.dist.is_main:
            return
        self._check_finite()
        state = self.state
        with _writing(self.run_dir, f"the checkpoint of step {state.step}"):
            self.run_dir.write_steps(self.steps)  # before the checkpoint: a resume drops rows past its step
            save_checkpoint(
                self.run_dir.checkpoints,
                self.training.weights_model,
                self.config.model,
                self.training.state_dict(),
                best=best,
            )


@contextmanager
def _writing(run: RunDir, what: str) -> Iterator[None]:
    """A full disk or a read-only folder mid-run: one line saying what is kept and how to go on."""
    try:
        yield
    except OSError as error:
        saved = committed_step(run.checkpoints)
        kept = f"the checkpoint of step {saved} is kept" if saved is not None else "no checkpoint was saved yet"
        raise RunDirError(
            f"cannot write {what} in {str(run.path)!r}: {error.strerror or error}; {kept}; free space or make the "
            f"folder writable, then continue with `resnets train --resume {run.path}`"
        ) from None


def _plot(
    run: RunDir,
    rows: list[dict[str, Any]],
    steps: list[tuple[int, float, float, float]],
    *,
    per_epoch: int,
    model: str,
    data: str,
) -> None:
    from resnets.reports.curves import plot_curves  # matplotlib loads only when a run writes curves

    plot_curves(
        rows, run.path / "curves.png", steps=steps, per_epoch=per_epoch, model=model, data=data, run=run.path.name
    )
