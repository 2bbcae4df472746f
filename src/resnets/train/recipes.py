"""Named training recipes: the optimiser, schedule and regularisation of a run, as data.

A recipe is a frozen :class:`Recipe`; runs override single fields (``--lr``, ``--set warmup_epochs=1``,
or a YAML/TOML file) instead of editing code. Schedules are per iteration: the learning rate changes at
every optimiser step, as in He et al. 2015 ("divided by 10 at 32k and 48k iterations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from resnets.errors import UnknownNameError

#: Epochs of the no-argument ``resnets train`` run (resnet20 on Fashion-MNIST). Change it here only: the
#: README's measured time and accuracy refer to this value (~14 min at ~450 images/s on 2 CPU cores).
DEFAULT_EPOCHS = 6

SCHEDULES = ("step", "cosine", "onecycle", "constant")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class Recipe:
    """How to train: every field is a hyperparameter with its unit in the comment."""

    name: str = "custom"
    description: str = ""
    optimizer: str = "sgd"  # sgd (He et al. 2015) | adamw (Loshchilov & Hutter 2019; Transformers train better with it)
    lr: float = 0.1  # peak learning rate (per step)
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    nesterov: bool = False
    weight_decay: float = 1e-4  # L2 coefficient, applied to every parameter as in He et al. 2015
    batch_size: int = 128  # images per optimiser step (per process under DDP)
    schedule: str = "step"  # step | cosine | onecycle | constant
    milestones: tuple[int, ...] = ()  # step schedule: iterations at which the lr is multiplied by lr_decay
    lr_decay: float = 0.1  # step schedule: factor applied at each milestone
    epochs: float | None = None  # training length in epochs; the cosine/one-cycle horizon when set
    max_steps: int | None = None  # hard stop in iterations; the stop is the smaller of the two when both are set
    warmup_epochs: float = 0.0  # linear warm-up from lr * warmup_start_factor to lr, in epochs
    warmup_start_factor: float = 0.1  # fraction of lr the linear warm-up starts from
    final_lr_factor: float = 0.0  # cosine/one-cycle: fraction of lr reached at the end
    deep_warmup_lr: float = 0.0  # He et al. 2015: constant lr for deep models until the train error is low; 0 = off
    deep_warmup_min_depth: int = 110  # weighted layers from which the deep warm-up applies
    deep_warmup_until_error: float = 80.0  # train error (%, moving average over ~10 steps) that ends it
    label_smoothing: float = 0.0  # cross-entropy target smoothing (Szegedy et al. 2016)
    augment: bool = True  # the paper's pad-and-random-crop (+ flip where the data allows it)
    crop_padding: int = 4  # pixels of zero padding before the random crop: 4 in He et al. 2015; 0 = no crop
    eval_every: int = 1  # epochs between test evaluations and checkpoints

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("a recipe needs epochs or max_steps (or both) to know when to stop")
        if self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"batch_size must be >= 1 and lr a finite number > 0, got {self.batch_size} and {self.lr}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        numbers = {
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "label_smoothing": self.label_smoothing,
        }
        bad = [f"{k}={v}" for k, v in numbers.items() if not (math.isfinite(v) and v >= 0)]
        if bad or self.warmup_start_factor <= 0 or not math.isfinite(self.warmup_start_factor):
            raise ValueError(
                f"momentum, weight_decay and label_smoothing must be finite and >= 0, warmup_start_factor > 0; "
                f"got {', '.join(bad) or f'warmup_start_factor={self.warmup_start_factor}'}"
            )
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))


def recipe_fields() -> list[str]:
    return [f.name for f in fields(Recipe)]


RECIPES: dict[str, Recipe] = {
    "he2015-cifar": Recipe(
        name="he2015-cifar",
        description="He et al. 2015 sec. 4.2: SGD 0.9, wd 1e-4, batch 128, lr 0.1 /10 at 32k and 48k, stop at 64k; "
        "nets of 110+ layers warm up at 0.01 until the train error < 80%",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=128,
        schedule="step",
        milestones=(32000, 48000),
        lr_decay=0.1,
        max_steps=64000,
        deep_warmup_lr=0.01,
        deep_warmup_min_depth=110,
        deep_warmup_until_error=80.0,
    ),
    "fast": Recipe(
        name="fast",
        description="Short schedule: 10 epochs of SGD Nesterov, 1 epoch linear warm-up then cosine to 0, "
        "label smoothing 0.1, wd 5e-4 (about 20 min for resnet20 on CIFAR-10 on 2 CPU cores)",
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=128,
        schedule="cosine",
        epochs=10,
        warmup_epochs=1.0,
        label_smoothing=0.1,
    ),
    "default": Recipe(
        name="default",
        description=(
            f"The no-argument run: the fast recipe for {DEFAULT_EPOCHS} epochs, flips but no crops "
            "(resnet20 on Fashion-MNIST)"
        ),
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=128,
        schedule="cosine",
        epochs=DEFAULT_EPOCHS,
        warmup_epochs=0.5,
        label_smoothing=0.1,
        crop_padding=0,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownNameError("recipe", name, RECIPES, hint="`resnets train --list-recipes` lists them") from None


def list_recipes() -> list[str]:
    return list(RECIPES)
