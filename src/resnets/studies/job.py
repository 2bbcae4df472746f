"""The whole job of ``resnets study``: what it trains and measures, a progress line with its ETA, and its totals.

Before any work, the job lists its pieces: every default run it will train, once however many instruments
share it (a run finished in OUT/runs costs nothing), with its compute counted as a run counts it (6 x the
model's multiply-adds per training image, 2 x per evaluated image: :mod:`resnets.compute`), and each
instrument's own measuring, estimated from what it cost on the machine the defaults were tuned on
(:data:`MEASURING`, in FLOPs that machine computes in the same time). Each time a piece starts, one line on
stderr names it with the job's time so far and its ETA: the work left over the rate of the work done so far
(before any is done, over :func:`initial_rate`). A finished run replaces its estimate with the compute its
summary.json counted.

The library code that trains or measures reports to :func:`current_job`, which is a silent job outside
``resnets study``.
"""

from __future__ import annotations

import contextvars
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TextIO

from resnets.compute import EVAL_FLOPS_PER_MAC, TRAIN_FLOPS_PER_MAC
from resnets.train.progress import format_duration

#: Training FLOP/s of one CPU thread on the default runs in fp32, with data, evaluation and snapshot overheads
#: (measured: ``resnets study all`` on a 2-core AMD EPYC with AVX512-BF16 trained 0.087 PFLOP of its runs in
#: 852 s, 102 GFLOP/s on 2 threads).
CPU_RATE_PER_THREAD = 51e9
#: What a GPU is assumed to sustain on these small nets until the job has measured its own rate (not measured).
GPU_RATE = 15e12
#: The reference machine's rate with its 2 threads, as ``resnets study all`` ran there.
REFERENCE_RATE = 2 * CPU_RATE_PER_THREAD
#: Each instrument's own measuring (apart from training) on the cpu budget's default runs, as the FLOPs the
#: reference machine computes in the wall seconds it took there (seconds x REFERENCE_RATE); on other budgets
#: scaled by the multiply-adds of the nets measured. From OUT/study-all.json of a ``resnets study all --out OUT``
#: in fp32 on the 2-core AMD EPYC with AVX512-BF16 (its pieces' seconds).
MEASURING: dict[str, float] = {
    "gradients": 15 * REFERENCE_RATE,
    "responses": 10 * REFERENCE_RATE,
    "lesion": 126 * REFERENCE_RATE,
    "paths": 63 * REFERENCE_RATE,
    "shattered": 46 * REFERENCE_RATE,
    "iterative": 16 * REFERENCE_RATE,
    "signal": 28 * REFERENCE_RATE,
    "gates": 1 * REFERENCE_RATE,
    "degradation": 21 * REFERENCE_RATE,
    "landscape": 222 * REFERENCE_RATE,
    "hessian": 65 * REFERENCE_RATE,
    "scaling": 9 * REFERENCE_RATE,
    "dynamics": 78 * REFERENCE_RATE,
}
#: Known data sets: (sample shape, training images, test images), for counting the compute of runs before they load.
DATA_SIZES: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "fashion-mnist": ((1, 28, 28), 60000, 10000),
    "mnist": ((1, 28, 28), 60000, 10000),
    "cifar10": ((3, 32, 32), 50000, 10000),
    "cifar100": ((3, 32, 32), 50000, 10000),
}


@dataclass
class Piece:
    """One piece of the job: a run to train or an instrument's measuring, with its estimated FLOPs."""

    key: str
    what: str
    flops: float
    done: bool = False
    counted: float | None = None  # the FLOPs a finished run's summary counted
    seconds: float = 0.0


@dataclass
class Job:
    """The pieces of one ``resnets study`` command, and the clock that gives its ETA (see the module docstring)."""

    pieces: list[Piece] = field(default_factory=list)
    title: str = "study"
    quiet: bool = True
    rate: float = CPU_RATE_PER_THREAD  # FLOP/s assumed before any piece is done
    stream: TextIO | None = None
    clock: Callable[[], float] = time.perf_counter
    started: float = field(default=0.0, init=False)
    _open: list[tuple[Piece, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def piece(self, key: str, what: str) -> Piece:
        """The planned piece ``key``; one the plan did not foresee joins it with no estimate."""
        for piece in self.pieces:
            if piece.key == key:
                return piece
        piece = Piece(key, what, 0.0)
        self.pieces.append(piece)
        return piece

    # -- what the code that trains and measures reports -------------------------------------------------------

    def training(self, key: str, what: str) -> None:
        self._start(self.piece(key, what), what)

    def trained(self, key: str, flops: float | None) -> None:
        self._finish(self.piece(key, key), flops)

    def measuring(self, name: str) -> None:
        self._start(self.piece(f"measure:{name}", f"measuring {name}"), f"measuring {name}")

    def measured(self, name: str) -> None:
        self._finish(self.piece(f"measure:{name}", name), None)

    def _start(self, piece: Piece, what: str) -> None:
        now = self.clock()
        if self._open:  # the piece it interrupts (an instrument training its runs) stops its clock meanwhile
            outer, since = self._open[-1]
            outer.seconds += now - since
        self._open.append((piece, now))
        self.say(what)

    def _finish(self, piece: Piece, flops: float | None) -> None:
        now = self.clock()
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] is piece:
                piece.seconds += now - self._open[i][1]
                del self._open[i]
                break
        piece.done, piece.counted = True, flops
        if self._open:  # the interrupted piece runs on
            outer, _ = self._open[-1]
            self._open[-1] = (outer, now)
            self.say(outer.what)

    # -- the line -------------------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def total_flops(self) -> float:
        return sum(self._work(p) for p in self.pieces)

    @property
    def done_flops(self) -> float:
        return sum(self._work(p) for p in self.pieces if p.done)

    def _work(self, piece: Piece) -> float:
        return piece.counted if piece.done and piece.counted is not None else piece.flops

    def eta(self) -> float:
        """Seconds left: the work left over the rate of the work done so far (or the assumed rate before)."""
        done, spent = self.done_flops, sum(p.seconds for p in self.pieces if p.done)
        rate = done / spent if done > 0 and spent > 0 else self.rate
        return (self.total_flops - done) / rate

    def line(self, what: str) -> str:
        """``study all: training X | 12m05s so far, 0.110 of 0.420 PFLOP done, eta 31m00s``."""
        return (
            f"{self.title}: {what} | {format_duration(self.elapsed)} so far, {self.done_flops / 1e15:.3f} of "
            f"{self.total_flops / 1e15:.3f} PFLOP done, eta {format_duration(self.eta())}"
        )

    def say(self, what: str) -> None:
        if not self.quiet:
            print(self.line(what), file=self.stream or sys.stderr, flush=True)

    def totals(self) -> dict[str, Any]:
        """What the job did: its wall time, the compute its runs counted and the estimate of its measuring."""
        trained = [p for p in self.pieces if p.key.startswith("measure:") is False and p.done]
        measuring = [p for p in self.pieces if p.key.startswith("measure:")]
        return {
            "wall_time_s": self.elapsed,
            "trained_runs": len(trained),
            "training_pflop": sum(p.counted or 0.0 for p in trained) / 1e15,
            "measuring_pflop_estimate": sum(p.flops for p in measuring) / 1e15,
            "pieces": [
                {"what": p.what, "seconds": p.seconds, "pflop": self._work(p) / 1e15, "counted": p.counted is not None}
                for p in self.pieces
            ],
        }


_CURRENT: contextvars.ContextVar[Job | None] = contextvars.ContextVar("resnets_study_job", default=None)


def current_job() -> Job:
    """The job of the running ``resnets study`` command; outside one, a silent job that nobody reads."""
    return _CURRENT.get() or Job()


@contextmanager
def running(job: Job) -> Iterator[Job]:
    """Make ``job`` the current one while the block runs."""
    token = _CURRENT.set(job)
    try:
        yield job
    finally:
        _CURRENT.reset(token)


# -- planning ------------------------------------------------------------------------------------------------


def initial_rate(device: str, threads: int) -> float:
    """FLOP/s assumed before the job has measured its own: the reference CPU's per thread, or a GPU's guess."""
    return GPU_RATE if device.startswith("cuda") else CPU_RATE_PER_THREAD * max(1, threads)


@lru_cache(maxsize=256)
def _macs(model: str, options: tuple[tuple[str, Any], ...], sample_shape: tuple[int, ...], classes: int) -> int:
    """Multiply-adds of one sample of ``sample_shape`` through ``model`` as the loader would feed it."""
    from resnets.data.layout import layout_for, model_input_shape
    from resnets.models.profile import build_meta, count_macs

    kind = build_meta(model, **dict(options)).input_kind
    layout, channels = layout_for(kind, "image", sample_shape, model)
    meta = build_meta(model, num_classes=classes, in_channels=channels, **dict(options))
    return count_macs(meta, model_input_shape(layout, sample_shape))


def run_flops(spec: Any, data: str) -> float:
    """The compute of training one run (``spec``: a RunSpec) on ``data``, counted as the engine counts it: its
    steps' training images and one evaluation of the test split per ``eval_every`` epochs."""
    from resnets.train.recipes import get_recipe

    shape, train_size, test_size = DATA_SIZES.get(data, ((1, 28, 28), 60000, 10000))
    recipe = get_recipe(spec.recipe)
    batch = int(spec.changes.get("batch_size", recipe.batch_size))
    every = int(spec.changes.get("eval_every", recipe.eval_every))
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.model_options.items()))
    macs = _macs(spec.model, options, shape, 100 if data == "cifar100" else 10)
    epochs = spec.steps * batch / train_size
    evaluations = max(1, math.floor(epochs / every + 1e-9))
    return TRAIN_FLOPS_PER_MAC * macs * spec.steps * batch + EVAL_FLOPS_PER_MAC * macs * test_size * evaluations


def plan(names: Sequence[str], options: dict[str, Any], context: Any) -> list[Piece]:
    """The pieces of running instruments ``names`` (each with its ``options``) in ``context``: the runs still to
    train, each once, and each instrument's measuring."""
    from resnets.studies.trained import data_of, is_trained, run_path

    pieces: list[Piece] = []
    seen: set[str] = set()
    for name in names:
        specs = planned_runs(name, options[name], context)
        for spec in specs:
            path = str(run_path(context, spec))
            if path in seen or is_trained(run_path(context, spec)):
                continue
            seen.add(path)
            what = f"training {spec.label} (seed {spec.seed}, {spec.steps} steps)"
            pieces.append(Piece(path, what, run_flops(spec, data_of(context, spec))))
        pieces.append(Piece(f"measure:{name}", f"measuring {name}", measuring_flops(name, specs, context)))
    return pieces


def planned_runs(name: str, options: Any, context: Any) -> list[Any]:
    """The runs instrument ``name`` trains with ``options``: its own ``planned_runs`` where it has one (a depth
    or scale sweep), else its default runs (none with ``--run``)."""
    from resnets.studies import get_study
    from resnets.studies.trained import default_specs

    instrument = get_study(name)
    if hasattr(instrument, "planned_runs"):
        return instrument.planned_runs(options, context)
    if getattr(options, "runs", ()):
        return []
    return default_specs(name, options, context)


def measuring_flops(name: str, specs: Sequence[Any], context: Any) -> float:
    """The estimate of instrument ``name``'s own measuring: :data:`MEASURING`, scaled by the multiply-adds of the
    nets it measures against those of the cpu budget's default runs."""
    from resnets.studies.contract import Context
    from resnets.studies.trained import data_of, default_specs

    base = MEASURING.get(name, 0.0)
    if not specs or context.budget == "cpu" and not context.data:
        return base
    reference = default_specs(name, None, Context())
    if not reference:
        return base
    ours = sum(_spec_macs(s, data_of(context, s)) for s in specs)
    theirs = sum(_spec_macs(s, data_of(Context(), s)) for s in reference)
    return base * ours / theirs if theirs else base


def _spec_macs(spec: Any, data: str) -> int:
    shape = DATA_SIZES.get(data, ((1, 28, 28), 0, 0))[0]
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.model_options.items()))
    return _macs(spec.model, options, shape, 10)


# -- the record of ``study all`` ---------------------------------------------------------------------------------

#: What ``resnets study all`` writes beside the studies: its wall time, compute and machine.
JOB_RECORD = "study-all.json"


def write_job_record(job: Job, context: Any, command: str) -> dict[str, Any]:
    """Write OUT/study-all.json (wall time, compute, machine, precision) and return it with its one ``line``."""
    import json
    from pathlib import Path

    import torch

    from resnets.io.atomic import atomic_write_text
    from resnets.runs.directory import environment

    totals = job.totals()
    env = environment(torch.device(context.device))
    env["cpu_model"] = cpu_model()
    where = env.get("gpu") or f"{env['cpu_model'] or env['machine']} ({env['torch_threads']} threads)"
    line = (
        f"{job.title}: {format_duration(totals['wall_time_s'])} wall on {where}, {context.precision_mode}, budget "
        f"{context.budget}: {totals['training_pflop']:.3f} PFLOP counted in {totals['trained_runs']} training runs, "
        f"about {totals['measuring_pflop_estimate']:.3f} PFLOP-equivalent of measuring (estimated)"
    )
    record = {"command": command, "line": line, **totals, **context.described(), "environment": env}
    atomic_write_text(Path(context.out) / JOB_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def cpu_model() -> str | None:
    """The CPU's model name as Linux reports it (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for row in info:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
