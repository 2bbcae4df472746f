"""Generated inputs for every command, from the schemas: records, manifests, export metadata, config files,
CSV and npz data, and flag values, each breaking its schema in ways nobody listed by hand.

Every case runs ``resnets.cli.main`` in-process in a case folder of its own (a copy of a trained run, the files
it generated) and must end as the CLI promises (:mod:`resnets.cli`):

- exit status 0, 2 or 130, never 70 (a bug) and never a traceback;
- on status 2, one stderr line (argparse's own refusals print its usage first);
- no file changed outside the case folder (the shared tree, run and export are compared byte for byte);
- the run still opens: once the file the case broke is put back, ``open_run`` and ``verify`` accept it.

The seed is fixed (``derandomize``), so CI runs the same cases every time. ``RESNETS_FUZZ_EXAMPLES=N`` runs N
cases per family instead of the CI budget (:data:`CI_EXAMPLES`); the README gives the command of the run of
more than 1,000 cases.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets.cli import main
from resnets.runs import open_run
from resnets.runs.checkpoint import MANIFEST_RULES, verify
from resnets.runs.record import DATA_RULES, RECORD_RULES
from resnets.train.config import RUN_RULES
from resnets.train.recipes import RECIPE_RULES

CI_EXAMPLES = 8  # per family, six families: about half a minute on one core
EXAMPLES = int(os.environ.get("RESNETS_FUZZ_EXAMPLES", CI_EXAMPLES))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed seed: the same cases on every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
pytestmark = pytest.mark.slow

# Values ----------------------------------------------------------------------------------------------------

#: Text with what breaks terminals, CSVs, paths and parsers: escapes, newlines, separators, quotes, NUL.
_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(
    ["\x1b", "\n", "\r", "\t", "\x00", "\u202e", ",", '"', "'", "/", "$", "=", "{", "["]
)
texts = st.one_of(st.text(_ALPHABET, max_size=12), st.sampled_from(["", " ", "..", "../../x", "a/b", "resnet20"]))
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**9, 10**12, 3, 4, 8, 8192, 8193, 100_000, 100_001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, 1e-300, 1e300, 1e38, 3.5e38, float("nan"), float("inf")]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3), max_leaves=8
)
DELETE = object()  # a field removed instead of changed


#: Values at and beyond the edges of every rule: zero, signs, float32's and int64's ends, NaN, the size bounds.
EDGES = st.sampled_from(
    [0, -1, 1, 2, 0.0, -0.5, 1e-13, 1e300, -1e300, 3.5e38, float("nan"), float("inf"), 2**63, 10**9, 8193, 100_001]
)


def near(value: Any) -> st.SearchStrategy:
    """Values close to ``value``'s kind, mostly at the edges of its rule: a list one shorter or longer, with one
    element broken or repeated, a number at an edge, a string with control characters."""
    if isinstance(value, bool):
        return st.one_of(st.booleans(), EDGES, texts)
    if isinstance(value, (int, float)):
        return st.one_of(EDGES, numbers)
    if isinstance(value, list):
        if not value:
            return st.lists(st.one_of(EDGES, texts), min_size=1, max_size=3)
        index = st.integers(0, len(value) - 1)
        return st.one_of(
            st.just([]),
            st.just(value[:-1]),
            st.just([*value, value[0]]),
            st.just(value * 2),
            index.flatmap(lambda i: st.one_of(EDGES, texts).map(lambda v: [*value[:i], v, *value[i + 1 :]])),
            st.lists(st.one_of(EDGES, texts), max_size=5),
        )
    if isinstance(value, str):
        return st.one_of(texts, st.just(value + "\x1b[2J"), st.just(value.upper()), st.just(""))
    if isinstance(value, dict):
        return st.one_of(st.just({}), st.just([value]), json_values)
    return st.one_of(EDGES, texts, json_values)


def mutation(document: dict, fields: list[str], rules: dict[str, Any] | None = None) -> st.SearchStrategy:
    """(dotted field, new value) for one of ``fields`` of ``document``: half the time a value its own rule accepts
    (``rules``: dotted field -> Rule), so that what the fields say together is tried too; else near its value, any
    JSON value, or removed."""

    def value_for(field: str) -> st.SearchStrategy:
        current = get(document, field)
        rule = (rules or {}).get(field)
        valid = near(current).filter(rule[0]) if rule else near(current)
        return st.one_of(valid, valid, valid, near(current), json_values, st.just(DELETE))

    return st.sampled_from(fields).flatmap(lambda field: value_for(field).map(lambda value: (field, value)))


def get(document: Any, field: str) -> Any:
    for part in field.split("."):
        document = document.get(part) if isinstance(document, dict) else None
    return document


def changed(document: dict, field: str, value: Any) -> dict:
    document = copy.deepcopy(document)
    *parents, last = field.split(".")
    target = document
    for part in parents:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    if value is DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return document


def dumps(document: Any) -> str:
    return json.dumps(document, allow_nan=True)  # NaN on purpose: a file that others wrote may hold it


# The case ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny image tree, a trained run, a safetensors export of it and an image, shared read-only by all cases."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hypothesis-fuzz")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("ant", "bee"):
            (root / "tree" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(root / "tree" / split / name / f"{i}.png")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESNETS_CACHE_DIR", str(cache))
        argv = ["train", "--model", "resnet20", "--data", str(root / "tree"), "--max-steps", "1", "-b", "4"]
        assert main([*argv, "--device", "cpu", "--quiet", "--out", str(root / "run")]) == 0
        assert main(["export", str(root / "run"), "--format", "safetensors", "--out", str(root / "m.safetensors")]) == 0
    (root / "cases").mkdir()
    return {
        "root": root,
        "tree": root / "tree",
        "run": root / "run",
        "export": root / "m.safetensors",
        "image": root / "tree" / "test" / "ant" / "0.png",
        "cache": cache,
        "cases": root / "cases",
    }


def _snapshot(root: Path, skip: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    seen = {}
    for path in root.rglob("*"):
        if path.relative_to(root).parts[0] in skip:
            continue
        status = path.lstat()
        seen[str(path)] = (status.st_size, status.st_mtime_ns) if path.is_file() else (-1, 0)
    return seen


def run_case(shared: dict[str, Path], argv: Callable[[Path], list[str]], prepare: Callable[[Path], None]) -> None:
    """Run one generated case in a fresh case folder and check every promise of the module docstring."""
    case = Path(tempfile.mkdtemp(dir=shared["cases"]))
    run = case / "run"
    shutil.copytree(shared["run"], run)
    pristine = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    prepare(case)
    broken = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and pristine.get(p) != p.read_bytes()}
    outside = _snapshot(shared["root"], skip=("cases", "cache"))
    command = argv(case)
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(case)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(command)
            except SystemExit as stop:  # argparse's refusals and --help
                code = stop.code
    finally:
        os.chdir(previous)
    printed = err.getvalue()
    lines = printed.strip().splitlines()
    what = f"{command}: {printed}"
    if os.environ.get("RESNETS_FUZZ_LOG"):  # one JSON line per case: what ran and how it ended
        with open(os.environ["RESNETS_FUZZ_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"argv": command[:2], "code": code, "stderr": lines[-1:] if lines else []}) + "\n")
    assert code in (0, 2, 130), what
    assert "Traceback" not in printed + out.getvalue() and "internal error" not in printed, what
    assert "not enough memory" not in printed, what  # every case is small: a size check let it through
    if code == 2:
        argparse = bool(lines) and lines[0].startswith("usage: resnets")
        if argparse:
            assert ": error: " in lines[-1] and all(line.startswith(("usage:", " ")) for line in lines[:-1]), what
        else:
            assert len(lines) == 1 and lines[0].startswith(f"resnets {command[0]}: error: "), what
    assert _snapshot(shared["root"], skip=("cases", "cache")) == outside, f"a file outside the case changed: {what}"
    for path, prepared in broken.items():  # put back what the case broke, where the command left it as it was
        if not path.exists() or path.read_bytes() != prepared:
            continue  # the command replaced it (a resume that was accepted saved a new checkpoint)
        if path in pristine:
            path.write_bytes(pristine[path])
        else:
            path.unlink(missing_ok=True)
    assert verify(run / "checkpoints")["generation"] in ("last", "previous"), what
    assert open_run(run).record.model == "resnet20", what
    shutil.rmtree(case, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_cache(shared: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(shared["cache"]))


def _run_commands(case: Path, shared: dict[str, Path]) -> dict[str, list[str]]:
    """The commands that read a run directory, as the cases run them on their copy."""
    run = str(case / "run")
    return {
        "eval": ["eval", run],
        "predict": ["predict", run, str(shared["image"]), "--format", "csv"],
        "export": ["export", run, "--format", "safetensors", "--out", str(case / "m.safetensors")],
        "resume": ["train", "--resume", run, "--max-steps", "2", "--quiet"],
    }


COMMANDS = st.sampled_from(["eval", "predict", "export", "resume"])


# Families ----------------------------------------------------------------------------------------------------


def _record(shared: dict[str, Path]) -> dict:
    return json.loads((shared["run"] / "config.json").read_text())


RECORD_FIELDS = [*RECORD_RULES, *(f"data.{k}" for k in DATA_RULES), "train.seed", "train.data", "train.recipe.lr"]
RECORD_FIELDS += ["train.recipe.batch_size", "train.recipe", "train.model_options", "train.threads", "train"]
RECORD_FIELD_RULES = {**RECORD_RULES, **{f"data.{k}": rule for k, rule in DATA_RULES.items()}}
#: The fields that must agree with each other (classes and their count, shapes, statistics, layouts): drawn four
#: times as often, each to a value its own rule accepts half the time, so that their relations are tried.
RELATED = ["num_classes", "in_channels", "input_kind", "eval_batch_size"]
RELATED += [f"data.{k}" for k in ("classes", "mean", "std", "sample_shape", "layout", "kind")]
RECORD_FIELDS = [*RELATED, *RECORD_FIELDS, *RELATED * 2]  # first too: Hypothesis tries early choices most


@FUZZ
@given(data=st.data(), command=COMMANDS)
def test_generated_run_records(shared, data, command) -> None:
    record = _record(shared)
    related = {field: RECORD_FIELD_RULES[field] for field in RELATED}  # the first change: a valid related field
    first = data.draw(mutation(record, RELATED, related), label="first change")
    more = data.draw(st.lists(mutation(record, RECORD_FIELDS, RECORD_FIELD_RULES), max_size=2), label="more changes")
    for field, value in [first, *more]:
        record = changed(record, field, value)
    garbage = data.draw(st.integers(0, 9), label="garbage") == 0  # one case in ten replaces the whole file
    whole = data.draw(st.one_of(json_values, st.binary(max_size=40)), label="whole file") if garbage else None

    def prepare(case: Path) -> None:
        target = case / "run" / "config.json"
        if whole is None:
            target.write_text(dumps(record))
        elif isinstance(whole, bytes):
            target.write_bytes(whole)
        else:
            target.write_text(dumps(whole))

    run_case(shared, lambda case: _run_commands(case, shared)[command], prepare)


MANIFEST_FILES = ["last.json", "previous.json", "last.json.pending", "snapshots.json"]


@FUZZ
@given(data=st.data(), command=COMMANDS, name=st.sampled_from(MANIFEST_FILES))
def test_generated_manifests(shared, data, command, name) -> None:
    manifest = json.loads((shared["run"] / "checkpoints" / "last.json").read_text())
    fields = [*MANIFEST_RULES, "files.last.safetensors", "files.last.state.pt", "files.../x", "record.num_classes"]
    changes = data.draw(st.lists(mutation(manifest, fields, MANIFEST_RULES), max_size=3), label="changes")
    for field, value in changes:
        manifest = changed(manifest, field, value)
    content = data.draw(st.one_of(st.just(dumps(manifest)), json_values.map(dumps), st.text(max_size=30)), label="file")

    def prepare(case: Path) -> None:
        (case / "run" / "checkpoints" / name).write_text(content)

    run_case(shared, lambda case: _run_commands(case, shared)[command], prepare)


@FUZZ
@given(data=st.data(), command=st.sampled_from(["eval", "predict", "export"]))
def test_generated_export_metadata(shared, data, command) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(shared["export"]), framework="pt") as handle:
        metadata = dict(handle.metadata())
    record = json.loads(metadata["record"])
    for field, value in data.draw(
        st.lists(mutation(record, RECORD_FIELDS, RECORD_FIELD_RULES), max_size=3), label="record changes"
    ):
        record = changed(record, field, value)
    metadata["record"] = dumps(record)
    for key in data.draw(st.lists(st.sampled_from(["format", "model", "record"]), max_size=2), label="metadata keys"):
        metadata[key] = data.draw(st.one_of(texts, json_values.map(dumps)), label=key)

    def prepare(case: Path) -> None:
        save_file(load_file(str(shared["export"])), str(case / "e.safetensors"), metadata=metadata)

    def argv(case: Path) -> list[str]:
        model = str(case / "e.safetensors")
        return {
            "eval": ["eval", model, "--out", str(case / "report")],
            "predict": ["predict", model, str(shared["image"])],
            "export": ["export", model, "--format", "safetensors", "--out", str(case / "again.safetensors")],
        }[command]

    run_case(shared, argv, prepare)


CONFIG_KEYS = sorted({*RECIPE_RULES, *RUN_RULES, "model", "data", "recipe", "device", "amp", "nosuch"})


def _config_values() -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(CONFIG_KEYS) | texts, json_values | numbers, max_size=4)


def _serialised(document: dict, form: str) -> bytes:
    import yaml

    if form == "yaml":
        return yaml.safe_dump(document, allow_unicode=True).encode("utf-8")
    if form == "json":
        return dumps(document).encode("utf-8")
    lines = []
    for key, value in document.items():  # TOML's basic forms; what it cannot hold is written badly on purpose
        shown = json.dumps(value) if isinstance(value, (str, list)) else str(value).lower()
        lines.append(f"{json.dumps(key)} = {shown}")
    return "\n".join(lines).encode("utf-8", errors="replace")


@FUZZ
@given(
    document=_config_values(),
    form=st.sampled_from(["yaml", "json", "toml"]),
    garbage=st.one_of(st.none(), st.binary(max_size=40)),
    train=st.booleans(),
)
def test_generated_config_files(shared, document, form, garbage, train) -> None:
    name = f"c.{'yml' if form == 'yaml' else form}"

    def prepare(case: Path) -> None:
        (case / name).write_bytes(_serialised(document, form) if garbage is None else garbage)

    def argv(case: Path) -> list[str]:
        base = ["train", "--config", str(case / name)]
        if not train:
            return [*base, "--print-config"]
        tiny = ["--model", "resnet20", "--data", str(shared["tree"]), "--max-steps", "1", "-b", "4"]
        return [*base, *tiny, "--quiet", "--device", "cpu", "--out", str(case / "new")]

    run_case(shared, argv, prepare)


_cells = st.one_of(numbers.map(str), texts, st.sampled_from(["", "nan", "inf", "-1", "1.5", "1e400", "0", "1"]))


@FUZZ
@given(
    header=st.lists(st.one_of(texts, st.sampled_from(["label", "target", "class", "a", "b"])), min_size=1, max_size=4),
    rows=st.lists(st.lists(_cells, min_size=0, max_size=5), min_size=0, max_size=8),
)
def test_generated_csv_files(shared, header, rows) -> None:
    import csv

    def prepare(case: Path) -> None:
        with open(case / "d.csv", "w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    tiny = ["--model", "resmlp_plain_20", "--max-steps", "1", "-b", "2", "--quiet", "--device", "cpu"]
    run_case(shared, lambda case: ["train", "--data", str(case / "d.csv"), *tiny, "--out", str(case / "r")], prepare)


_dtypes = st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "complex64", "U3", "int8"])


def _array(shape: st.SearchStrategy) -> st.SearchStrategy:
    def build(dtype: str, dims: tuple[int, ...], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        values = rng.integers(-3, 300, size=dims)
        if dtype.startswith("U"):
            return values.astype(str)
        if dtype.startswith(("float", "complex")):
            values = values.astype(dtype)
            if values.size and seed % 3 == 0:
                values.flat[0] = math.nan
            return values
        return values.astype(dtype) if dtype != "uint8" else (values % 256).astype("uint8")

    return st.builds(build, _dtypes, shape, st.integers(0, 2**16))


@FUZZ
@given(
    x=_array(st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)),
    y=_array(st.lists(st.integers(0, 8), min_size=1, max_size=2).map(tuple)),
    names=st.one_of(st.none(), st.lists(texts, max_size=5)),
    keys=st.sampled_from([("x", "y"), ("features", "labels"), ("x_train", "y_train"), ("a", "b")]),
)
def test_generated_npz_files(shared, x, y, names, keys) -> None:
    def prepare(case: Path) -> None:
        arrays = {keys[0]: x, keys[1]: y}
        if names is not None:
            arrays["classes"] = np.array(names, dtype=str)
        np.savez(case / "d.npz", **arrays)

    tiny = ["--model", "resmlp_plain_20", "--max-steps", "1", "-b", "2", "--quiet", "--device", "cpu"]
    run_case(shared, lambda case: ["train", "--data", str(case / "d.npz"), *tiny, "--out", str(case / "r")], prepare)


FLAG_KEYS = sorted({*RECIPE_RULES, *RUN_RULES} - {"threads"})  # threads: a valid count only slows the case down


#: The words some fields take (optimisers, schedules, padding modes), so their combinations with numbers are tried.
WORDS = ["reflect", "zeros", "adamw", "sgd", "cosine", "linear", "step", "constant", "true", "false"]


def _flag_value() -> st.SearchStrategy:
    others = ["none", "null", "[1, 2]", "{a: 1}", "true", "1e3"]
    return st.one_of(st.sampled_from(WORDS), EDGES.map(str), numbers.map(str), texts, st.sampled_from(others))


@FUZZ
@given(
    settings_=st.lists(st.tuples(st.sampled_from(FLAG_KEYS), _flag_value()), min_size=1, max_size=3),
    train=st.booleans(),
)
def test_generated_flag_values(shared, settings_, train) -> None:
    def argv(case: Path) -> list[str]:
        given = [part for key, value in settings_ for part in ("--set", f"{key}={value}")]
        if not train:
            return ["train", *given, "--print-config"]
        tiny = ["--model", "resnet20", "--data", str(shared["tree"]), "-b", "4", "--quiet", "--device", "cpu"]
        return ["train", *tiny, *given, "--set", "max_steps=1", "--out", str(case / "new")]  # one step, whatever came

    run_case(shared, argv, lambda case: None)
