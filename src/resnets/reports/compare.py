"""Several runs side by side: one table and one figure, so that a sweep reads at a glance.

Each run is read the way every command reads one: its record through :func:`resnets.runs.record.read_record`,
its metrics and steps through :class:`resnets.runs.directory.RunDir`, its final figures from summary.json. A
run without a summary (still training, or stopped) is shown with the metrics it has so far. The settings
column names only the configuration keys whose values differ between the runs (a sweep's variables), read
from the full training configuration in each run record.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnets.errors import ConfigError, ResnetsError
from resnets.io.atomic import atomic_write, atomic_write_text
from resnets.io.text import plot_label, printable
from resnets.runs.directory import RunDir
from resnets.runs.lock import held_by_live_process
from resnets.runs.record import RECORD_FILE, RunRecord, read_record
from resnets.train.progress import format_duration

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    from matplotlib.figure import Figure

#: Orders ``--sort`` accepts: by an error (runs without it last), by name, or as given.
SORTS = ("test", "val", "train", "name", "given")
#: Configuration keys that say where and how verbosely a run went, not what it trained.
NOT_SETTINGS = frozenset({"out", "quiet", "threads", "tensorboard", "log_every", "description"})
#: Table columns: (heading, JSON key, right-aligned).
COLUMNS = [
    ("run", "run", False),
    ("status", "status", False),
    ("model", "model", False),
    ("data", "data", False),
    ("params", "params", True),
    ("epochs", "epochs", True),
    ("steps", "steps", True),
    ("train err (%)", "train_error", True),
    ("test err (%)", "test_error", True),
    ("best val err (%)", "best_val_error", True),
    ("wall time", "wall_time_s", True),
    ("images/s", "images_per_s", True),
    ("settings", "settings", False),
]
_SORT_KEYS = {"test": "test_error", "val": "best_val_error", "train": "train_error"}


@dataclass
class RunEntry:
    """One run's row of the comparison, with the curves its figure draws."""

    path: Path
    run: str
    status: str  # done | running (a live process holds its lock) | stopped (neither summary nor live trainer)
    model: str
    data: str
    params: int | None
    epochs: float | None
    steps: int | None
    train_error: float | None  # percent, at the last evaluation
    test_error: float | None
    best_val_error: float | None  # of the epoch the validation split chose; None without one
    wall_time_s: float | None
    images_per_s: float | None  # the mean over epochs, as summary.json gives it
    config: dict[str, Any]  # every setting, flattened (see flat_settings)
    settings: dict[str, Any] = field(default_factory=dict)  # only the settings that differ between the runs
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    step_rows: list[tuple[int, float, float, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        keys = [key for _, key, _ in COLUMNS]
        return {"path": str(self.path), **{key: getattr(self, key) for key in keys}}


@dataclass
class Comparison:
    """The runs in table order, what differs between them, and what was left out."""

    runs: list[RunEntry]
    differs: dict[str, list[Any]]  # key -> each run's value, in the order of ``runs``
    skipped: list[str] = field(default_factory=list)  # "PATH: why" of runs found in a folder but unreadable

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [run.to_dict() for run in self.runs], "differs": self.differs, "skipped": self.skipped}


def compare_runs(sources: Sequence[str | Path], sort: str = "test") -> Comparison:
    """Read the runs named by ``sources`` (run directories, or folders holding runs) and compare them.

    A source that is neither is a ConfigError. Inside a folder, a run whose files cannot be read is left out
    and named in ``skipped``; a run named directly must be readable.
    """
    if sort not in SORTS:
        raise ConfigError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    runs: list[RunEntry] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    for source in sources:
        for path, inside_folder in _expand(Path(source)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                runs.append(read_run(path))
            except ResnetsError as error:
                if not inside_folder:
                    raise
                skipped.append(f"{path}: {error}")
    if not runs:
        raise ConfigError(f"no readable run in {', '.join(map(str, sources))}; {'; '.join(skipped)}")
    _name_uniquely(runs)
    if sort != "given":
        runs = sorted(runs, key=_sort_key(sort))
    differs = differing_settings([run.config for run in runs])
    for run in runs:
        run.settings = {key: run.config.get(key) for key in differs}
    return Comparison(runs, differs, skipped)


def _expand(path: Path) -> list[tuple[Path, bool]]:
    """``path`` itself if it is a run, else the runs directly inside it; (path, found inside a folder)."""
    if (path / RECORD_FILE).is_file():
        return [(path, False)]
    try:
        inside = sorted(p for p in path.iterdir() if (p / RECORD_FILE).is_file()) if path.is_dir() else []
    except OSError as error:
        raise ConfigError(f"cannot list {str(path)!r} ({error.strerror}); give run directories you can read") from None
    if not inside:
        what = "does not exist" if not path.exists() else "is not a run directory and holds none"
        raise ConfigError(
            f"{str(path)!r} {what} (no {RECORD_FILE}); give run directories written by `resnets train`, or a "
            "folder holding them"
        )
    return [(p, True) for p in inside]


def read_run(path: str | Path) -> RunEntry:
    """One run as the comparison shows it: summary.json's figures, or for an unfinished run its metrics so far."""
    path = Path(path)
    record = read_record(path)
    run = RunDir(path)
    rows, steps = run.read_metrics(), run.read_steps()
    summary = _read_summary(run)
    last = rows[-1] if rows else {}
    latest = max([last.get("step", 0), steps[-1]["step"] if steps else 0])
    live = held_by_live_process(path)
    # A summary is final only while no later session (a resume) has trained past it.
    final = summary is not None and not live and _number(summary.get("steps"), 0) >= latest
    if final:
        best = summary.get("best") or {}
        figures = {
            "epochs": summary.get("epochs"),
            "steps": summary.get("steps"),
            "train_error": summary.get("train_error"),
            "test_error": summary.get("test_error"),
            "best_val_error": best.get("val_error"),
            "wall_time_s": summary.get("wall_time_s"),
            "images_per_s": summary.get("images_per_s"),
        }
    else:
        vals = [row["val_error"] for row in rows if _number(row.get("val_error")) is not None]
        speeds = [row["images_per_s"] for row in rows if _number(row.get("images_per_s")) is not None]
        figures = {
            "epochs": last.get("epoch"),
            "steps": latest or None,
            "train_error": last.get("train_error"),
            "test_error": last.get("test_error"),
            "best_val_error": min(vals) if vals else None,  # what the run's validation selection keeps
            "wall_time_s": last.get("wall_time_s"),
            "images_per_s": sum(speeds) / len(speeds) if speeds else None,
        }
    params = summary.get("params") if summary else None
    return RunEntry(
        path=path,
        run=path.resolve().name,
        status="done" if final else "running" if live else "stopped",
        model=record.model,
        data=record.data.name if record.data else str(record.train.get("data", "-")),
        params=params if isinstance(params, int) else _count_parameters(record),
        **{key: _number(value) for key, value in figures.items()},
        config=flat_settings(record),
        rows=rows,
        step_rows=[(s["step"], s["lr"], s["loss"], s["error"]) for s in steps],
    )


def _read_summary(run: RunDir) -> dict[str, Any] | None:
    if not (run.path / "summary.json").is_file():
        return None
    try:
        summary = run.read_json("summary.json")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(
            f"{str(run.path / 'summary.json')!r} cannot be read ({error}); restore or remove it"
        ) from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{str(run.path / 'summary.json')!r} holds no JSON object; restore or remove it")
    return summary


def _number(value: Any, default: Any = None) -> Any:
    """``value`` if it is a finite number (JSON writes a missing measurement as null), else ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return value


def _count_parameters(record: RunRecord) -> int | None:
    """Parameters of the recorded model, built on the meta device (no memory, no initialisation cost)."""
    from resnets.models.profile import build_meta, count_parameters

    options = {"num_classes": record.num_classes, "in_channels": record.in_channels, **record.model_options}
    try:
        return count_parameters(build_meta(record.model, **options))
    except (ResnetsError, RuntimeError, NotImplementedError, TypeError):
        return None  # a model this installation does not know (or cannot build on meta): shown as "-"


def flat_settings(record: RunRecord) -> dict[str, Any]:
    """Every setting of a run under the name a user gives it: recipe keys bare (``lr``), the recipe's name as
    ``recipe``, model options as ``model_options.NAME``; output, logging and description keys left out."""
    train = dict(record.train) or {"model": record.model, "model_options": record.model_options}
    recipe = dict(train.pop("recipe", None) or record.recipe)
    flat: dict[str, Any] = {}
    if "name" in recipe:
        flat["recipe"] = recipe.pop("name")
    for key, value in [*train.items(), *recipe.items()]:
        if key in NOT_SETTINGS:
            continue
        if key == "model_options" and isinstance(value, dict):
            flat.update({f"model_options.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def differing_settings(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The keys whose values are not the same in every config (a key one config lacks differs), with each
    config's value (None where it lacks the key), in first-seen key order."""
    keys = list(dict.fromkeys(key for config in configs for key in config))
    missing = object()
    differs = {}
    for key in keys:
        values = [config.get(key, missing) for config in configs]
        if any(v is missing or v != values[0] for v in values):
            differs[key] = [None if v is missing else v for v in values]
    return differs


def _name_uniquely(runs: list[RunEntry]) -> None:
    """Runs are named by their folder; two folders of one name (a/run, b/run) get their parent's name too."""
    names = [run.run for run in runs]
    for run in runs:
        if names.count(run.run) > 1:
            run.run = f"{run.path.resolve().parent.name}/{run.run}"


def _sort_key(sort: str) -> Any:
    if sort == "name":
        return lambda run: run.run
    key = _SORT_KEYS[sort]
    return lambda run: (getattr(run, key) is None, getattr(run, key) or 0.0)


def show_value(value: Any) -> str:
    """A setting as a cell shows it: 0.1, true, [30, 60], - for none; text from the run's files escaped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{printable(k)}={show_value(v)}" for k, v in value.items()) + "}"
    return printable(value)


def _cell(key: str, value: Any) -> str:
    if value is None or value == {}:
        return "-"
    if key == "params":
        return f"{value:,}"
    if key == "epochs":
        return f"{value:g}"
    if key in ("train_error", "test_error", "best_val_error"):
        return f"{value:.2f}"
    if key == "wall_time_s":
        return format_duration(value)  # as the training log writes it: 45s, 9m12s, 2h05m
    if key == "images_per_s":
        return f"{value:,.0f}"
    if key == "settings":
        return ", ".join(f"{printable(k)}={show_value(v)}" for k, v in value.items())
    return printable(value)  # run, model and data names come from folder names and run records


def table_cells(comparison: Comparison) -> list[list[str]]:
    """The table as text: a heading row, then one row per run."""
    cells = [[heading for heading, _, _ in COLUMNS]]
    for run in comparison.runs:
        cells.append([_cell(key, getattr(run, key)).replace("|", "\\|") for _, key, _ in COLUMNS])
    return cells


def markdown_table(comparison: Comparison) -> str:
    """A Markdown table, its columns padded so that it also reads as plain text in a terminal."""
    cells = table_cells(comparison)
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if right else c.ljust(w) for c, w, (_, _, right) in zip(row, widths, COLUMNS)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if right else "-" * (w + 2) for w, (_, _, right) in zip(widths, COLUMNS)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(row) for row in cells[1:])])


def differs_line(comparison: Comparison) -> str:
    """``settings that differ: lr: 0.1 / 0.2 / 0.4; seed: 0 / 0 / 1`` (in table order), or that none do."""
    if not comparison.differs:
        return "settings that differ: none (the runs share every setting)"
    parts = [
        f"{printable(key)}: {' / '.join(show_value(v) for v in values)}" for key, values in comparison.differs.items()
    ]
    return "settings that differ: " + "; ".join(parts)


def write_comparison(comparison: Comparison, out: str | Path) -> list[Path]:
    """Write OUT/compare.md, compare.json and compare.png; returns their paths."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder for compare.md, compare.json and compare.png")
    paths = [out / "compare.md", out / "compare.json", out / "compare.png"]
    n = len(comparison.runs)
    markdown = (
        f"# {n} run{'s' * (n != 1)} compared\n\n{differs_line(comparison)}\n\n{markdown_table(comparison)}\n\n"
        f"![test error and training loss of each run](compare.png)\n"
    )
    figure = compare_figure(comparison)
    try:
        atomic_write_text(paths[0], markdown)
        atomic_write_text(paths[1], json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n")
        atomic_write(paths[2], lambda tmp: figure.savefig(tmp, format="png"))
    except OSError as error:
        raise ConfigError(f"cannot write the comparison into {str(out)!r} ({error.strerror}); give a writable --out")
    return paths


def compare_figure(comparison: Comparison) -> Figure:
    """Test error (top) and training loss (bottom) against epoch, one colour per run, labelled by run and settings.

    The loss is the per-step loss's moving average where the run kept steps.csv, else the per-epoch mean.
    Every run gets a line in the error panel (empty before its first evaluation), so the legend names them all.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from resnets.reports.curves import epoch_points, step_series, steps_per_epoch

    figure = Figure(figsize=(7.2, 6.4), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    errors, losses = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    n = len(comparison.runs)
    palette = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    for i, run in enumerate(comparison.runs):
        colour = palette(i if n <= 20 else i / max(n - 1, 1))
        label = textwrap.fill(
            plot_label(run.run + (f" ({_cell('settings', run.settings)})" if run.settings else "")), 110
        )
        xs, ys = epoch_points(run.rows, "test_error")
        errors.plot(
            xs, ys, color=colour, linewidth=1.8, marker="o" if len(xs) < 20 else None, markersize=3, label=label
        )
        per_epoch = steps_per_epoch(run.rows)
        if run.step_rows and per_epoch:
            series = step_series(run.step_rows, per_epoch)
            losses.plot(series.x, series.smooth, color=colour, linewidth=1.4)
        else:
            xs, ys = epoch_points(run.rows, "train_loss")
            if xs:
                losses.plot(xs, ys, color=colour, linewidth=1.4, marker="o", markersize=3)
    errors.set_ylabel("test error (%)")
    losses.set_ylabel("train loss (smoothed)")
    losses.set_xlabel("epoch")
    for axes in (errors, losses):
        axes.grid(True, alpha=0.3)
    short = max(len(line.get_label()) for line in errors.get_lines()) <= 50
    figure.legend(loc="outside lower center", fontsize=7, ncols=2 if short and n > 1 else 1)
    figure.suptitle(f"{n} run{'s' * (n != 1)}: test error and training loss")
    return figure
