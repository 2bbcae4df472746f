"""What every instrument shares: its options, its result, the three files it writes, and small helpers.

An instrument is a module in ``resnets.studies`` with ``NAME``, ``CLAIM`` (the claim being tested, with its
source) and ``run(options) -> StudyResult``. It measures through the shared model interface
(``residual_blocks()`` and the unit operations: ``lesioned``, ``scaled``, ``capture``), never through a
family's internals. :func:`write_study` writes ``NAME.json`` (every number with the settings that produced
it), the figures, and ``NAME.md`` (the claim, the numbers, one plain sentence of verdict).

BatchNorm at initialisation: a deep net fresh from ``create_model`` has running statistics 0/1, so in eval
mode its outputs overflow (ResNet-1202: 1e8 or NaN). Instruments that measure untrained nets use train-mode
BN (batch statistics) and say so in the JSON (``"bn": "train-mode batch statistics"``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from resnets.device import Precision, resolve_device, resolve_precision
from resnets.errors import ConfigError
from resnets.io.atomic import atomic_write, atomic_write_text
from resnets.metrics import evaluate
from resnets.models import SkipNetwork, create_model, get_model_entry
from resnets.runs import Run
from resnets.studies import PRECISIONS

BN_TRAIN_MODE = "train-mode batch statistics (the running statistics of an untrained net are unset)"
BN_EVAL_MODE = "eval-mode running statistics (trained)"


@dataclass(frozen=True)
class StudyOptions:
    """What ``resnets study`` was asked; each instrument documents which fields it reads and its defaults."""

    models: tuple[str, ...] = ()  # registered model names (an instrument's default set when empty)
    runs: tuple[str, ...] = ()  # trained run directories (default: short runs trained into OUT/runs)
    data: str | None = None  # data set for trained runs and measurements (default: fashion-mnist)
    data_dir: str | None = None
    depths: tuple[int, ...] = ()  # depth sweep in weighted layers (an instrument's default when empty)
    seeds: int | None = None  # repetitions over initialisation / sampling (None: the instrument's default)
    samples: int | None = None  # images (or points) measured per evaluation; None: the instrument's default
    steps: int | None = None  # training steps of the default runs; None: the instrument's default
    budget: str = "cpu"  # training budget of instruments that train: "cpu" (minutes) or "paper" (the paper's)
    grid: int | None = None  # points per axis of a measured grid (landscape); None: the instrument's default
    out: str = "studies"  # output directory: OUT/NAME.json, OUT/NAME.md, OUT/NAME-*.png
    device: str = "cpu"
    quiet: bool = False
    # "fp32" (the same numbers on every CPU) or "fast": bf16 autocast where the device computes bf16 natively,
    # for the default runs' training and for every measurement
    precision: str = "fp32"

    def pick(self, field_name: str, default: Any) -> Any:
        """The option's value, or ``default`` where the user left it empty."""
        value = getattr(self, field_name)
        return default if value in ((), None) else value

    def measuring_precision(self) -> Precision:
        """What the study trains its default runs in and measures in: fp32, or the device's fast precision."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        return resolve_precision(resolve_device(self.device), False if self.precision == "fp32" else None, None)


@dataclass
class StudyResult:
    """Everything an instrument measured; ``write_study`` turns it into NAME.json and NAME.md."""

    name: str
    claim: str  # what the literature says, with its source
    verdict: str  # one plain sentence: do the numbers support the claim?
    supported: bool | None  # None where the measurement cannot decide
    settings: dict[str, Any]  # every setting that produced the numbers (models, depths, seeds, bn mode, ...)
    numbers: dict[str, Any]  # every number, JSON-able
    table: str  # the headline numbers as a Markdown table
    figures: list[Path] = field(default_factory=list)
    command: str = ""  # the command line that produced it
    precision: str = ""  # what every number was measured in (and default runs trained in): "fp32", "bf16 autocast"


def write_study(result: StudyResult, out_dir: str | Path) -> dict[str, Path]:
    """Write NAME.json and NAME.md into ``out_dir`` (the figures are already there); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = asdict(result)
    payload["figures"] = [Path(p).name for p in result.figures]
    json_path = out / f"{result.name}.json"
    atomic_write_text(json_path, json.dumps(_finite(payload), indent=2) + "\n")
    verdict = {True: "supported", False: "not supported", None: "undecided"}[result.supported]
    lines = [
        f"# {result.name}",
        "",
        f"**Claim.** {result.claim}",
        "",
        f"**Verdict ({verdict}).** {result.verdict}",
        "",
        "## Measured",
        "",
        result.table.strip(),
        "",
    ]
    if result.figures:
        lines += ["## Figures", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in result.figures] + [""]
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    lines += ["## Settings", ""]
    if result.precision:
        lines += [f"Precision: {result.precision}.", ""]
    lines += [settings, ""]
    if result.command:
        lines += ["Reproduce with:", "", "```bash", result.command, "```", ""]
    md_path = out / f"{result.name}.md"
    atomic_write_text(md_path, "\n".join(lines))
    return {"json": json_path, "md": md_path}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    return value


def spread(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of repeated measurements (std 0 for one value).

    Non-finite values (a diverged or undefined measurement) are left out; ``dropped`` counts them.
    """
    given = [float(v) for v in values]
    data = [v for v in given if math.isfinite(v)]
    if not data:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0, "dropped": len(given)}
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    return {
        "mean": statistics.fmean(data),
        "std": std,
        "min": min(data),
        "max": max(data),
        "n": len(data),
        "dropped": len(given) - len(data),
    }


def fmt(stats: dict[str, float], digits: int = 3) -> str:
    """``mean ± std`` of a :func:`spread`, for tables."""
    return f"{stats['mean']:.{digits}g} ± {stats['std']:.2g}"


def progress(iterable: Iterable[Any], *, total: int | None = None, desc: str = "", quiet: bool = False) -> Iterator:
    """A tqdm bar on stderr for long loops; silent when ``quiet``."""
    return iter(tqdm(iterable, total=total, desc=desc, leave=False, disable=quiet, dynamic_ncols=True))


def new_figure(width: float = 6.4, height: float = 4.2, cols: int = 1, rows: int = 1) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas (plotting never touches matplotlib's global state) and its axes."""
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes if rows * cols > 1 else axes[0][0]


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> Path:
    """Write ``OUT/NAME.png`` atomically; returns its path."""
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


class NoDepthSweep(ConfigError):
    """The model's family has no depth parameter to sweep (as opposed to a depth it cannot take)."""


def model_at_depth(name: str, depth: int, **options: Any) -> SkipNetwork:
    """The registered model ``name`` rebuilt with ``depth`` weighted layers, for depth sweeps (see
    :func:`depth_options`)."""
    return create_model(name, **depth_options(name, depth), **options)


def depth_options(name: str, depth: int) -> dict[str, Any]:
    """The options that give the registered model ``name`` ``depth`` weighted layers.

    CIFAR-layout ResNets and their plain twins have 6n+2 layers (n basic blocks per stage); the looks-linear
    plain nets 6n+2 with 2n units per stage; models whose config has a ``depth`` field (fully connected
    Highway nets, residual MLPs, Transformers) take it directly; convolutional Highway nets get
    (depth - 4) / 3 highway layers per stage (their stem, two transitions and the classifier make 4).
    """
    entry = get_model_entry(name)
    fields = entry.options()
    if "depth" in fields:
        return {"depth": depth}
    layers = fields.get("layers")
    if entry.family in ("resnet-cifar", "multires") and len(layers) == 3 and fields.get("block", "basic") == "basic":
        n = _per_stage(name, depth, 2, 6)
        return {"layers": (n, n, n)}
    if entry.family == "looks-linear":
        n = _per_stage(name, depth, 2, 6)
        return {"layers": (2 * n,) * 3}
    if entry.family == "highway" and layers is not None and len(layers) == 3:
        n = _per_stage(name, depth, 4, 3)
        return {"layers": (n, n, n)}
    raise NoDepthSweep(
        f"model {name!r} has no depth sweep; use a CIFAR ResNet or plain net (resnet20, plain20), a Highway net, "
        "a residual MLP, a looks-linear net or a Transformer"
    )


def _per_stage(name: str, depth: int, fixed: int, per: int) -> int:
    if depth < fixed + per or (depth - fixed) % per:
        raise ConfigError(f"depth {depth} does not fit {name!r}: it takes {per}n+{fixed} layers (n >= 1)")
    return (depth - fixed) // per


def first_batches(loader: Any, samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``samples`` samples of a loader's epoch 0, as a list of (inputs, targets) batches."""
    batches, seen = [], 0
    for x, y in loader.epoch_batches(0):
        take = min(len(y), samples - seen)
        batches.append((x[:take], y[:take]))
        seen += take
        if seen >= samples:
            break
    return batches


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def subset_batches(run: Run, samples: int, seed: int, split: str = "test") -> Batches:
    """``samples`` samples of ``split`` drawn without replacement by ``seed`` (all, in order, if fewer), batched
    and normalised as the run measures them (``Run.loader`` never shuffles or augments, even for "train")."""
    loader = run.loader(split)
    n = int(loader.targets.shape[0])
    if samples >= n:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    return [loader.batch(0, i, order) for i in range(math.ceil(len(order) / loader.batch_size))]


def run_label(run: Run, taken: set[str]) -> str:
    """The run's model name, with its directory where another run already took that name (added to ``taken``)."""
    label = run.record.model
    if label in taken:
        label = f"{label} ({run.path.name if run.path else run.checkpoint.name})"
    taken.add(label)
    return label


def error_rate(model: SkipNetwork, batches: Batches, precision: Precision | None = None) -> float:
    """Top-1 error of ``model`` on ``batches`` as a fraction, measured by the one evaluation loop."""
    result = evaluate(model, batches, model.num_classes, precision=precision)
    correct = sum(result.confusion[i][i] for i in range(len(result.confusion)))
    return (result.n - correct) / result.n


def seeds(options: StudyOptions, default: int = 3) -> Sequence[int]:
    """The seeds 0..seeds-1 (at least one); ``default`` of them where the user gave no ``--seeds``."""
    return range(max(1, options.pick("seeds", default)))
