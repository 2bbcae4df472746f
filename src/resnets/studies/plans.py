"""What the instruments train when given no ``--run``: one table of default runs, and each net's reference error.

:data:`DEFAULT_RUNS` says, per instrument and budget, which groups of runs (:class:`DefaultRuns`) it measures:
the models, their depth and options, the data, the recipe and its length, the seeds and the weight snapshots
kept. A group expands into :class:`RunSpec` values, each one run with everything its training and its place in
``OUT/runs`` depend on, so two instruments that name the same group (or equal groups) share the same runs,
trained once.

The ``cpu`` groups run their recipe to its end: a row's ``steps`` is its recipe's whole schedule on
Fashion-MNIST (the tests check it), never a stop in its middle. The nets are the residual speedrun net and its
plain twin at 16-32-64 channels, whose units are one conv each (3n+5 layers for n units per stage): at 56
layers they have 54 units, ResNet-110's count, for the path, lesion, landscape and response claims, and at 20
and 56 layers they are He et al. 2015's shallowest and deepest twins for the degradation claim. ``--budget
paper`` trains He et al. 2015's own setting on CIFAR-10 where a group exists, and the ``cpu`` groups elsewhere.

:data:`REFERENCES` holds, per net and recipe, the test error the recipe reaches at convergence, measured as the
same recipe run at twice the length (``scripts/measure_references.py``): a run within :data:`CONVERGED_WITHIN`
points of it counts as converged, and a verdict resting on a run further from it is undecided.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resnets.models import create_model, depth_options, list_models

DEFAULT_DATA = "fashion-mnist"
STUDY_RECIPE = "study-fm"
CONVERGED_WITHIN = 1.0  # points of test error from the recipe's converged error within which a run has converged


@dataclass(frozen=True)
class RunSpec:
    """One run to train, or to find in OUT/runs: its path and its training depend on these fields only."""

    model: str
    label: str  # names the run in OUT/runs and in the numbers (the model, its options' tag and depth)
    steps: int  # optimiser steps: the whole schedule (--max-steps alone sets the horizon)
    seed: int = 0
    recipe: str = STUDY_RECIPE
    snapshots: int = 4  # weight snapshots kept, evenly spaced, step 0 included (0: none)
    data: str | None = None  # None: the study's --data, else fashion-mnist
    model_options: Mapping[str, Any] = field(default_factory=dict)
    changes: Mapping[str, Any] = field(default_factory=dict)  # training settings changed from the recipe's

    def with_steps(self, steps: int | None) -> RunSpec:
        """The same run at another length (``--steps``); None keeps this one's."""
        return self if steps is None else dataclasses.replace(self, steps=steps)


@dataclass(frozen=True)
class DefaultRuns:
    """A group of default runs: every model of ``models`` at every depth of ``depths`` (none: as registered),
    for ``seeds`` training seeds, all with one recipe, length, data and set of snapshots."""

    models: tuple[str, ...]
    steps: int
    recipe: str = STUDY_RECIPE
    snapshots: int = 4
    data: str | None = None
    depths: tuple[int, ...] = ()
    seeds: int = 1
    model_options: Mapping[str, Any] = field(default_factory=dict)  # for every model of the group (widths, ...)
    tag: str = ""  # names ``model_options`` in the run labels
    changes: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, model: str, *, depth: int | None = None, seed: int = 0, steps: int | None = None) -> RunSpec:
        """The run of ``model`` (at ``depth``) with ``seed``; ``steps`` None: the group's length."""
        if depth is None:
            name, options, label = model, dict(self.model_options), "-".join(filter(None, (model, self.tag)))
        else:
            name, options, label = at_depth(model, depth, self.model_options, self.tag)
        return RunSpec(
            name, label, steps or self.steps, seed, self.recipe, self.snapshots, self.data, options, dict(self.changes)
        )

    def specs(self, *, steps: int | None = None, seeds: int | None = None) -> list[RunSpec]:
        """Every run of the group: by seed, then depth, then model."""
        depths: Sequence[int | None] = self.depths or (None,)
        return [
            self.spec(model, depth=depth, seed=seed, steps=steps)
            for seed in range(seeds or self.seeds)
            for depth in depths
            for model in self.models
        ]

    def as_registered(self, models: Iterable[str], steps: int | None = None) -> list[RunSpec]:
        """``--model`` names: each model as registered (no group options or depth), with the group's recipe."""
        return [dataclasses.replace(self.spec(m, steps=steps), model_options={}, label=m) for m in models]


def at_depth(name: str, depth: int, options: Mapping[str, Any] | None = None, tag: str = "") -> tuple[str, dict, str]:
    """(model, options, run label) of ``name`` with ``depth`` weighted layers and ``options``: the registered
    name where one matches (plain56, resnet56), so that runs are shared, else ``name`` with options."""
    found = depth_options(name, depth)
    candidate = name.rstrip("0123456789") + str(depth)
    if (
        not options
        and candidate in list_models()
        and create_model(candidate).config == create_model(name, **found).config
    ):
        return candidate, {}, candidate
    return name, {**(options or {}), **found}, "-".join(filter(None, (name, tag, f"d{depth}")))


# -- the table -----------------------------------------------------------------------------------------------

#: The residual speedrun net and its plain twin at 16-32-64 channels: BN scales learned and no Dirac
#: initialisation, so that the twins differ in the shortcut alone and the plain twin is He et al. 2015's plain
#: net (a Dirac start is an identity path of its own).
TWIN_OPTIONS = {"widths": (16, 32, 64), "dirac_init": False, "bn_scale": True}
TWIN_MODELS = ("speedrun_plain", "speedrun")
CPU_STEPS = 936  # the study-fm recipe's 4 epochs of 234 steps (batch 256) on Fashion-MNIST's 60,000 images
CPU_SNAPSHOTS = 5  # step 0, a quarter, half, three quarters and the end

TWINS_56 = DefaultRuns(
    TWIN_MODELS, CPU_STEPS, snapshots=CPU_SNAPSHOTS, depths=(56,), model_options=TWIN_OPTIONS, tag="w16"
)
TWINS_20 = dataclasses.replace(TWINS_56, depths=(20,))
RESIDUAL_56 = dataclasses.replace(TWINS_56, models=("speedrun",))
#: The plain contrast of the claims about one residual net (lesion, iterative): plain-56 does not converge in
#: this budget (see the degradation study), so the 20-layer plain twin stands in, as Veit et al. 2016 set a
#: 15-layer VGG against ResNet-110.
PLAIN_20 = dataclasses.replace(TWINS_20, models=("speedrun_plain",))
#: A 20-layer fully connected Highway net of 50 units a layer (Srivastava et al. 2015's MNIST nets, Sec. 4.1, had
#: 50 layers; highway_fc_50 stays at chance for 4 epochs of this recipe, at lr 0.02 to 2).
HIGHWAY = DefaultRuns(("highway_fc_20",), CPU_STEPS, snapshots=CPU_SNAPSHOTS)

#: He et al. 2015, Sec. 4.2: 64k iterations, lr /10 at 32k and 48k, a 45k/5k train/validation split, CIFAR-10.
PAPER_TWINS = DefaultRuns(
    ("plain20", "resnet20"),
    64000,
    recipe="he2015-cifar",
    snapshots=5,
    data="cifar10",
    depths=(20, 32, 44, 56, 110),
    seeds=2,
    changes={"val_size": 5000},
)
PAPER_110 = dataclasses.replace(PAPER_TWINS, depths=(110,), seeds=1)

#: instrument -> budget -> its groups of default runs; the one place to change what the instruments train.
DEFAULT_RUNS: dict[str, dict[str, tuple[DefaultRuns, ...]]] = {
    "gradients": {"cpu": (TWINS_56,)},
    "responses": {
        "cpu": (TWINS_20, RESIDUAL_56),
        "paper": (
            dataclasses.replace(PAPER_TWINS, depths=(20, 56), seeds=1),
            dataclasses.replace(PAPER_110, models=("resnet20",)),
        ),
    },
    "lesion": {"cpu": (RESIDUAL_56, PLAIN_20), "paper": (PAPER_110,)},
    "paths": {"cpu": (RESIDUAL_56,), "paper": (dataclasses.replace(PAPER_110, models=("resnet20",)),)},
    "iterative": {"cpu": (RESIDUAL_56, HIGHWAY, PLAIN_20)},
    "gates": {"cpu": (HIGHWAY,)},
    "landscape": {"cpu": (TWINS_56,)},
    "hessian": {"cpu": (TWINS_20,)},
    "dynamics": {"cpu": (RESIDUAL_56,)},
    "degradation": {"cpu": (dataclasses.replace(TWINS_56, depths=(20, 56), seeds=2),), "paper": (PAPER_TWINS,)},
    "scaling": {
        # no warm-up and a constant lr of 0.1 (He et al. 2015's), high enough to expose an exploding start; the
        # claim is about the start of training, so these runs are not trained to convergence
        "cpu": (
            DefaultRuns(
                ("resmlp_identity_20",),
                200,
                recipe="default",
                snapshots=0,
                depths=(30, 100, 200),
                seeds=2,
                changes={"lr": 0.1, "warmup_epochs": 0.0, "schedule": "constant"},
            ),
        ),
        "paper": (
            DefaultRuns(  # 10 epochs of Fashion-MNIST at batch 128
                ("resmlp_identity_20",),
                4690,
                recipe="default",
                snapshots=0,
                depths=(30, 100, 300, 1000),
                seeds=2,
                changes={"lr": 0.1, "warmup_epochs": 0.0, "schedule": "constant"},
            ),
        ),
    },
}
#: Instruments whose claim is about the start of training, not about nets trained to convergence.
NOT_AT_CONVERGENCE = ("scaling",)


def default_runs(name: str, budget: str) -> tuple[DefaultRuns, ...]:
    """The groups of default runs of instrument ``name`` on ``budget`` (the cpu groups where there is no paper
    group); none for an instrument that trains nothing."""
    rows = DEFAULT_RUNS.get(name, {})
    return rows.get(budget, rows.get("cpu", ()))


def defaults_text(name: str) -> dict[str, str]:
    """What ``--model`` and ``--steps`` (and, where a group sweeps depth, ``--depths`` and ``--seeds``) default
    to, per budget, for ``resnets study NAME --help``."""
    rows = DEFAULT_RUNS.get(name)
    if not rows:
        return {}

    def per_budget(value: Callable[[tuple[DefaultRuns, ...]], str]) -> str:
        return "; ".join(f"{budget}: {value(groups)}" for budget, groups in rows.items())

    def labels(groups: tuple[DefaultRuns, ...]) -> str:
        return " ".join(dict.fromkeys(spec.label for group in groups for spec in group.specs(seeds=1)))

    shown = {
        "models": per_budget(labels),
        "steps": per_budget(lambda groups: " / ".join(str(g.steps) for g in groups)),
    }
    if any(len(group.depths) > 1 or group.seeds > 1 for groups in rows.values() for group in groups):
        shown["depths"] = per_budget(lambda groups: ",".join(map(str, groups[0].depths)))
        shown["seeds"] = per_budget(lambda groups: str(groups[0].seeds))
    return shown


# -- how far from convergence ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The test error (%) a net's recipe reaches at convergence on one data set, and how it was measured."""

    test_error: float
    steps: int  # the reference run's length
    how: str


#: (run label, recipe, data) -> the reference error of that net and recipe (see the module docstring).
_MEASURED = "study-fm at 1872 steps (8 epochs), seed 0, fp32: scripts/measure_references.py on a 2-core AMD EPYC with AVX512-BF16"
REFERENCES: dict[tuple[str, str, str], Reference] = {
    # plain-56 stays far from the others at any length of this recipe: the degradation problem itself
    ("speedrun_plain-w16-d56", STUDY_RECIPE, DEFAULT_DATA): Reference(54.34, 2 * CPU_STEPS, _MEASURED),
    ("speedrun-w16-d56", STUDY_RECIPE, DEFAULT_DATA): Reference(7.73, 2 * CPU_STEPS, _MEASURED),
    ("speedrun_plain-w16-d20", STUDY_RECIPE, DEFAULT_DATA): Reference(8.27, 2 * CPU_STEPS, _MEASURED),
    ("speedrun-w16-d20", STUDY_RECIPE, DEFAULT_DATA): Reference(7.37, 2 * CPU_STEPS, _MEASURED),
    ("highway_fc_20", STUDY_RECIPE, DEFAULT_DATA): Reference(11.47, 2 * CPU_STEPS, _MEASURED),
}
#: Recipe fields that set a run's length, not how it trains: a reference holds at any length of its recipe.
LENGTH_FIELDS = ("name", "description", "epochs", "max_steps", "warmup_steps")


def reference_specs(budget: str = "cpu", factor: int = 2) -> list[RunSpec]:
    """The runs that measure :data:`REFERENCES`: every net that a claim about trained nets measures on
    ``budget`` (seed 0), with its recipe run ``factor`` times as long. ``scripts/measure_references.py`` trains
    them and prints the table's entries."""
    found: dict[tuple[str, str, str | None], RunSpec] = {}
    for name in DEFAULT_RUNS:
        if name in NOT_AT_CONVERGENCE:
            continue
        for group in default_runs(name, budget):
            for spec in group.specs(seeds=1):
                found.setdefault((spec.label, spec.recipe, spec.data), spec.with_steps(factor * spec.steps))
    return list(found.values())


def find_reference(
    model: str, model_options: Mapping[str, Any], recipe: Mapping[str, Any], data: str
) -> tuple[str, Reference] | None:
    """(label, reference) of the default run with this model, model options and recipe (its fields apart from
    the length) on ``data``, where one is known; a ``--run`` of the same net and recipe finds it too."""
    from resnets.train.recipes import RECIPES

    options = _plain(model_options)
    for (label, recipe_name, data_name), reference in REFERENCES.items():
        registered = RECIPES.get(recipe_name)
        if data_name != data or registered is None or recipe.get("name") != recipe_name:
            continue
        same_recipe = all(
            _plain(recipe.get(key)) == _plain(value)
            for key, value in dataclasses.asdict(registered).items()
            if key not in LENGTH_FIELDS
        )
        spec = _spec_named(label)
        if same_recipe and spec is not None and spec.model == model and _plain(spec.model_options) == options:
            return label, reference
    return None


def _spec_named(label: str) -> RunSpec | None:
    """The default run labelled ``label`` in any group of the table."""
    for budgets in DEFAULT_RUNS.values():
        for groups in budgets.values():
            for group in groups:
                for spec in group.specs(seeds=1):
                    if spec.label == label:
                        return spec
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, as a value reads back from a run's JSON record."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
