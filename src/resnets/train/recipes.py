"""Named training recipes: the optimiser, schedule and regularisation of a run, as data.

A recipe is a frozen :class:`Recipe`; runs override single fields (``--lr``, ``--set warmup_epochs=1``,
or a YAML/TOML file) instead of editing code. Schedules are per iteration: the learning rate changes at
every optimiser step, as in He et al. 2015 ("divided by 10 at 32k and 48k iterations").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from resnets.data.augment import PAD_MODES
from resnets.errors import UnknownNameError
from resnets.io.schema import (  # the rule vocabulary of every value read, shared with run records and manifests
    COUNT,
    FLAG,
    FLOAT32_MAX,
    MAX_SIDE,
    NATURAL,
    NON_NEGATIVE,
    POSITIVE,
    FieldError,
    Rule,
    between,
    check_fields,
    each,
    one_of,
    optional,
)

#: Epochs of the ``default`` recipe, the one a named model trains with when no recipe is named (the no-argument
#: run was resnet20 on Fashion-MNIST with it until the main job took :data:`MAIN_RECIPE`).
DEFAULT_EPOCHS = 6

SCHEDULES = ("step", "cosine", "linear", "constant")
#: Old schedule names, read as their new ones so that old run records and config files still load.
#: "onecycle" was never torch's OneCycleLR: a linear warm-up, then a linear decay to final_lr_factor.
RENAMED_SCHEDULES = {"onecycle": "linear"}
OPTIMIZERS = ("sgd", "adamw")


def setting(default: Any, help: str) -> Any:
    """A recipe field with its help text: the one place that ``resnets train --help`` reads it from."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """How to train: every field is a hyperparameter, with its unit in its help text."""

    name: str = "custom"
    description: str = ""
    optimizer: str = setting(
        "sgd", "sgd (He et al. 2015) | adamw (Loshchilov & Hutter 2019; Transformers train better with it)"
    )
    lr: float = setting(0.1, "peak learning rate (per step)")
    momentum: float = setting(0.9, "SGD momentum; AdamW's beta1")
    nesterov: bool = setting(False, "Nesterov momentum (SGD)")
    weight_decay: float = setting(
        1e-4, "L2 coefficient, applied to every parameter as in He et al. 2015 (see decay_norm_and_bias)"
    )
    batch_size: int = setting(128, "images per optimiser step (per process under DDP)")
    schedule: str = setting(
        "step",
        "the lr after the warm-up: step (x lr_decay at each milestone), cosine or linear (down to "
        "lr * final_lr_factor at the end), or constant",
    )
    milestones: tuple[int, ...] = setting((), "step schedule: iterations at which the lr is multiplied by lr_decay")
    lr_decay: float = setting(0.1, "step schedule: factor applied at each milestone")
    epochs: float | None = setting(
        None, "training length in epochs, and the cosine/linear horizon; --epochs without --max-steps clears max_steps"
    )
    max_steps: int | None = setting(
        None,
        "training length in iterations; --max-steps without --epochs clears epochs and so sets the horizon too (as "
        "in Hugging Face's Trainer); with epochs, the run stops at the smaller, on the epochs' curve",
    )
    warmup_epochs: float = setting(0.0, "linear warm-up from lr * warmup_start_factor to lr, in epochs")
    warmup_steps: int | None = setting(
        None,
        "the warm-up in iterations instead, when set; --max-steps without --epochs sets it to the share of the run "
        "that the recipe's warm-up takes of its epochs",
    )
    warmup_start_factor: float = setting(0.1, "fraction of lr the linear warm-up starts from")
    final_lr_factor: float = setting(0.0, "cosine/linear: fraction of lr reached at the end")
    deep_warmup_lr: float = setting(
        0.0, "He et al. 2015: constant lr for deep models until the train error is low; 0 = off"
    )
    deep_warmup_min_depth: int = setting(110, "weighted layers from which the deep warm-up applies")
    deep_warmup_until_error: float = setting(80.0, "train error (%, moving average over ~10 steps) that ends it")
    label_smoothing: float = setting(0.0, "cross-entropy target smoothing (Szegedy et al. 2016)")
    augment: bool = setting(True, "the paper's pad-and-random-crop (+ flip where the data allows it)")
    crop_padding: int = setting(4, "pixels of zero padding before the random crop: 4 in He et al. 2015; 0 = no crop")
    eval_every: int = setting(1, "epochs between test evaluations and checkpoints")
    # Conveniences of timm's and torchvision's recipes, each off by default so that the recipes above are unchanged.
    decay_norm_and_bias: bool = setting(
        True, "weight decay on norm weights and biases (1-d tensors) too; off is timm's default"
    )
    ema_decay: float = setting(0.0, "exponential moving average of the weights per step (e.g. 0.999); 0 = off")
    mixup_alpha: float = setting(0.0, "mixup (Zhang et al. 2018): Beta(alpha, alpha) mixing of image pairs; 0 = off")
    cutmix_alpha: float = setting(
        0.0, "cutmix (Yun et al. 2019): Beta(alpha, alpha) pasted box; 0 = off; with mixup: 50/50"
    )
    random_erasing: float = setting(0.0, "probability of erasing one random box per image (Zhong et al. 2017); 0 = off")
    grad_clip_norm: float = setting(0.0, "clip the global gradient norm to this value before each step; 0 = off")
    # The speedruns' tricks (Page 2018; Jordan 2024, airbench), each off by default; cifar10-speedrun turns them on.
    default_model: str | None = setting(None, "the model the recipe is made for: trained when the run names none")
    whiten_images: int = setting(
        0,
        "training images whose 2x2-patch covariance sets the model's patch-whitening conv before the first step; "
        "its weights then stay frozen (airbench: 5000); 0 = it trains like any layer",
    )
    whiten_bias_epochs: float | None = setting(
        None, "epochs during which the patch-whitening conv's bias trains, then it freezes (airbench: 3); none = all"
    )
    bias_lr_scale: float = setting(
        1.0,
        "lr multiplier of biases and norm shifts (1-d tensors); their weight decay per step stays the weights' "
        "(airbench: 64)",
    )
    lookahead_every: int = setting(
        0,
        "every N steps, move the weights to their running average and train on from there (Lookahead, Zhang et "
        "al. 2019, as airbench: 5); 0 = off",
    )
    lookahead_decay: float = setting(
        0.95, "lookahead: the average's decay per step at the end of training; it is lower before (see _power)"
    )
    lookahead_power: float = setting(
        3.0, "lookahead: the decay of each pull is decay^N x (step / last step)^power, so it averages hardest late"
    )
    lookahead_start_epochs: float = setting(3.0, "lookahead: epochs trained before the averaging starts")
    alternating_flip: bool = setting(
        False,
        "mirror each image on alternate epochs (its first orientation drawn once per image) instead of a coin flip "
        "per epoch: every two epochs show each image both ways (airbench)",
    )
    pad_mode: str = setting("zeros", "the crop's padding: zeros (He et al. 2015) or reflect (airbench)")
    tta: int = setting(
        0,
        "test-time augmentation of every evaluation: 0 none, 1 the mirror image too (where flips keep the label), "
        "2 also 1-pixel shifts up-left and down-right (views weighted 1/2, 1/4, 1/4, as airbench); its compute "
        "is counted",
    )

    def __post_init__(self) -> None:
        if isinstance(self.milestones, (list, tuple)):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.schedule in RENAMED_SCHEDULES:  # an old run record or file: read silently (the CLI warns)
            object.__setattr__(self, "schedule", RENAMED_SCHEDULES[self.schedule])
        check_fields(self, RECIPE_RULES)
        for key in STEP_SCALES:
            if getattr(self, key) > FLOAT32_MAX:
                raise FieldError(
                    key, getattr(self, key), f"at most {FLOAT32_MAX:.4g}, the largest float32 a step can use"
                )
        if self.epochs is None and self.max_steps is None:
            raise FieldError(
                "epochs", None, "a finite number > 0, or give --max-steps (max_steps): a recipe needs one to stop"
            )
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise FieldError("momentum", self.momentum, "> 0 with nesterov true (Nesterov needs momentum)")


#: Factors and rates that scale a float32 step: torch refuses a step size beyond float32's range (``--lr 1e300``
#: was a traceback), and a larger product of them (lr x lr_decay at a milestone) ends as a divergence at its step.
STEP_SCALES = ("lr", "weight_decay", "lr_decay", "warmup_start_factor", "deep_warmup_lr", "grad_clip_norm")

#: What each recipe field accepts: values that torch refuses or that cannot train are refused here, before any
#: data loads or a run directory exists.
RECIPE_RULES: dict[str, Rule] = {
    "optimizer": one_of(OPTIMIZERS),
    "schedule": one_of(SCHEDULES),
    "lr": POSITIVE,
    # heavy-ball momentum >= 1 never forgets a gradient (the step grows without bound), and AdamW's beta1 must be
    # < 1 (torch refuses it): [0, 1) for both, as in every paper's range (0.9 in He et al. 2015)
    "momentum": between(0, 1, open_high=True),
    "nesterov": FLAG,
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "milestones": each(NATURAL),
    "lr_decay": NON_NEGATIVE,
    "epochs": optional(POSITIVE),
    "max_steps": optional(COUNT),
    "warmup_epochs": NON_NEGATIVE,
    "warmup_steps": optional(NATURAL),
    "warmup_start_factor": POSITIVE,
    "final_lr_factor": NON_NEGATIVE,
    "deep_warmup_lr": NON_NEGATIVE,
    "deep_warmup_min_depth": NATURAL,
    "deep_warmup_until_error": NON_NEGATIVE,
    "label_smoothing": between(0, 1),
    "augment": FLAG,
    "crop_padding": between(0, MAX_SIDE, integer=True),  # and the padded batch must fit in memory (session)
    "eval_every": COUNT,
    "decay_norm_and_bias": FLAG,
    "ema_decay": between(0, 1, open_high=True),
    "mixup_alpha": NON_NEGATIVE,
    "cutmix_alpha": NON_NEGATIVE,
    "random_erasing": between(0, 1),
    "grad_clip_norm": NON_NEGATIVE,
    "default_model": (lambda v: v is None or isinstance(v, str), "a registered model name, or null"),
    "whiten_images": NATURAL,
    "whiten_bias_epochs": optional(NON_NEGATIVE),
    "bias_lr_scale": POSITIVE,
    "lookahead_every": NATURAL,
    "lookahead_decay": between(0, 1),
    "lookahead_power": NON_NEGATIVE,
    "lookahead_start_epochs": NON_NEGATIVE,
    "alternating_flip": FLAG,
    "pad_mode": one_of(PAD_MODES),
    "tta": between(0, 2, integer=True),
}


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
            f"For any model named without a recipe: the fast recipe for {DEFAULT_EPOCHS} epochs, flips but no crops"
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
    # `python -m benchmarks.finetune_lr` (a resnet18 file pretrained on related images, a 4-class folder of 8
    # images a class, 30 steps, 3 seeds): at the default recipe's lr 0.2 the batch loss spiked to 24-55 and the
    # test error was 22-50%; at 0.01, 0-3% with no batch loss above 2.7; the classifier at 10x the lr was no better.
    "finetune": Recipe(
        name="finetune",
        description="For starting weights (--weights, --pretrained; chosen by default with them): SGD Nesterov at "
        "lr 0.01 (a twentieth of the default recipe's, which wrecks a pretrained trunk), 1 epoch warm-up then "
        "cosine over 10 epochs, wd 1e-4, batch 32 for small folders, label smoothing 0.1",
        lr=0.01,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        batch_size=32,
        schedule="cosine",
        epochs=10,
        warmup_epochs=1.0,
        label_smoothing=0.1,
    ),
    "cifar10-speedrun": Recipe(
        name="cifar10-speedrun",
        description="Time to accuracy on CIFAR-10 (airbench94's recipe, Jordan 2024, on our residual speedrun net): "
        "9.9 epochs at batch 1024, Nesterov SGD 0.85, triangular lr, label smoothing 0.2, patch whitening, "
        "lookahead, alternating flips, 2-pixel reflect crops, test-time flips and shifts",
        default_model="speedrun",
        optimizer="sgd",
        # airbench's lr 11.5 and decay 0.0153 "per 1024 examples" on a summed loss, for a mean loss: the step
        # 11.5 / (1 + 1 / (1 - 0.85)) = 1.5, and a decay of 0.0153 / 7.667 = 1.996e-3 per step, lr x weight_decay.
        lr=1.5,
        momentum=0.85,
        nesterov=True,
        weight_decay=1.996e-3 / 1.5,
        bias_lr_scale=64.0,
        batch_size=1024,
        schedule="linear",
        epochs=9.9,
        warmup_epochs=9.9 * 0.23,  # the lr peaks at 23% of the run, from 0.2 x lr, and ends at 0.07 x lr
        warmup_start_factor=0.2,
        final_lr_factor=0.07,
        label_smoothing=0.2,
        crop_padding=2,
        pad_mode="reflect",
        alternating_flip=True,
        whiten_images=5000,
        whiten_bias_epochs=3.0,
        lookahead_every=5,
        lookahead_decay=0.95,
        lookahead_power=3.0,
        lookahead_start_epochs=3.0,
        tta=2,
        eval_every=10,  # one evaluation, at the end: the record's compute counts it
    ),
    # The instruments' default runs (resnets.studies.plans): the speedrun tricks that fit any model, on a schedule
    # short enough for two CPU cores; its error at twice the length is each net's reference (see the README).
    "study-fm": Recipe(
        name="study-fm",
        description="The instruments' runs on Fashion-MNIST: 4 epochs at batch 256, Nesterov SGD 0.9, triangular lr "
        "(peak 0.4 after 1 epoch, from 0.2 x lr, down to 0), label smoothing 0.1, lookahead from epoch 1, "
        "alternating flips, 2-pixel reflect crops; one evaluation, at the end",
        optimizer="sgd",
        lr=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=256,
        schedule="linear",
        epochs=4,
        warmup_epochs=1.0,
        warmup_start_factor=0.2,
        final_lr_factor=0.0,
        label_smoothing=0.1,
        crop_padding=2,
        pad_mode="reflect",
        alternating_flip=True,
        lookahead_every=5,
        lookahead_decay=0.95,
        lookahead_power=3.0,
        lookahead_start_epochs=1.0,
        eval_every=4,
    ),
}


#: The no-argument ``resnets train``, the main job: the speedrun net on Fashion-MNIST. The README's "The main
#: job" gives the search that chose it. Against cifar10-speedrun: batch 256 (4x the steps per epoch; the lr, and
#: so the decay per step, is a quarter; and the step is faster here), no crops (the items are centred, and crops
#: cost accuracy here), random erasing 0.3 in their place, no test-time views (they did not help), MAIN_EPOCHS
#: epochs.
MAIN_RECIPE = "fashion-mnist-speedrun"
MAIN_EPOCHS = 9
RECIPES[MAIN_RECIPE] = replace(
    RECIPES["cifar10-speedrun"],
    name=MAIN_RECIPE,
    description=f"The main job (no-argument run): cifar10-speedrun on Fashion-MNIST for {MAIN_EPOCHS} epochs at a "
    "quarter of its batch and lr, flips and random erasing but no crops, no test-time augmentation",
    lr=0.375,
    batch_size=256,
    random_erasing=0.3,
    epochs=MAIN_EPOCHS,
    warmup_epochs=round(MAIN_EPOCHS * 0.23, 2),  # the peak at 23%, as in cifar10-speedrun
    crop_padding=0,
    tta=0,
    eval_every=MAIN_EPOCHS,
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownNameError("recipe", name, RECIPES, hint="`resnets train --list-recipes` lists them") from None


def list_recipes() -> list[str]:
    return list(RECIPES)
