"""Why the ``finetune`` recipe's lr is 0.01: fine-tuning a 1000-class resnet18 file on a small image folder.

python -m benchmarks.finetune_lr            # from the repository root; about 5 minutes on 2 CPU cores

The file and the folder are the ones tests/train/test_finetune.py builds: torchvision's resnet18 trained for 40
steps on oriented gratings, and a 4-class folder of 8 training and 16 test images a class at other orientations.
Each setting trains 30 steps at batch 16 (no flips: a flip turns one class into another), for seeds 1 to 3, and
prints the test error and the largest batch loss. "head x10" puts the classifier in its own optimiser group at 10
times the lr (a measurement only: no recipe field does this).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from resnets.train import optim
from tests.train.test_finetune import _run, grating_folder, pretrained_file

SETTINGS = {
    "from scratch, default recipe": (),
    "default recipe (lr 0.2)": ("--weights", "{w}", "--reset-head", "--recipe", "default"),
    "finetune, lr 0.1": ("--weights", "{w}", "--reset-head", "--lr", "0.1"),
    "finetune, lr 0.03": ("--weights", "{w}", "--reset-head", "--lr", "0.03"),
    "finetune (lr 0.01)": ("--weights", "{w}", "--reset-head"),
    "finetune, lr 0.003, head x10": ("--weights", "{w}", "--reset-head", "--lr", "0.003", "head x10"),
    "finetune, lr 0.01, head x10": ("--weights", "{w}", "--reset-head", "head x10"),
}


def _head_apart(scale: float):
    original = optim.param_groups

    def groups(model: torch.nn.Module, recipe) -> list[dict]:
        head = {id(p) for p in model.get_submodule(model.classifier_name).parameters()}
        found = [{**g, "params": [p for p in g["params"] if id(p) not in head]} for g in original(model, recipe)]
        params = [p for p in model.parameters() if id(p) in head]
        return [
            *found,
            {"params": params, "weight_decay": recipe.weight_decay, "lr_scale": scale, "train_epochs": None},
        ]

    return groups


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="finetune-lr-"))
    data, weights = grating_folder(root / "folder"), pretrained_file(root / "resnet18-gratings.pth")
    print(f"{'setting':32s} {'test error (%), seeds 1-3':28s} largest batch loss")
    for name, args in SETTINGS.items():
        errors, peaks = [], []
        for seed in (1, 2, 3):
            flags = [a.format(w=weights) for a in args if a != "head x10"]
            original = optim.param_groups
            if "head x10" in args:
                optim.param_groups = _head_apart(10.0)
            try:
                summary, losses = _run(root / f"{name}-{seed}".replace(" ", "_"), data, "--seed", str(seed), *flags)
            finally:
                optim.param_groups = original
            errors.append(summary["test_error"])
            peaks.append(max(losses))
        print(f"{name:32s} {' / '.join(f'{e:.1f}' for e in errors):28s} {' / '.join(f'{p:.3g}' for p in peaks)}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
