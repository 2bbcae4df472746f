"""What a user writes first, which is what every case is compared against.

A torchvision-style Dataset that augments and normalises one image at a time in ``__getitem__``, behind
torch's DataLoader; an eager fp32 NCHW model (torchvision's resnet50 for ImageNet shapes); a plain SGD
step. Nothing here is slow on purpose: it is the code of the tutorials.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from resnets import create_model
from resnets.bench.timing import Clock, rate

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # CIFAR-10-like statistics, in [0, 1] units


class PerSampleDataset(Dataset):
    """Pad, random-crop, flip and normalise each uint8 image on its own, as torchvision's transforms do."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, pad: int, generator: torch.Generator) -> None:
        self.images, self.targets, self.pad, self.generator = images, targets, pad, generator
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i].float().div(255.0)  # (3, H, W)
        height, width = image.shape[1:]
        if self.pad:
            image = F.pad(image, (self.pad,) * 4)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,), generator=self.generator).tolist()
            image = image[:, top : top + height, left : left + width]
        if torch.rand(1, generator=self.generator).item() < 0.5:
            image = image.flip(-1)
        return (image - self.mean) / self.std, self.targets[i]


def reference_model(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """(model, what it is): torchvision's resnet50 where one exists, else ours, eager fp32 NCHW."""
    if name == "resnet50":
        try:
            import torchvision  # optional: only the ImageNet baselines use it
        except ImportError:
            note = "torchvision is not installed: baseline is our resnet50 (same architecture and state-dict keys)"
            return create_model(name, num_classes=num_classes), note
        return torchvision.models.resnet50(weights=None, num_classes=num_classes), "torchvision resnet50"
    return create_model(name, num_classes=num_classes), f"resnets {name}"


def forever(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


class EagerTraining:
    """The baseline training loop: batches from a DataLoader, moved to the device, forward, loss, backward, SGD step."""

    def __init__(self, model: nn.Module, loader: DataLoader, lr: float, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.batches = forever(loader)

    def steps(self, n: int) -> int:
        """Run ``n`` steps; the images seen. The data path is inside, as it is in training."""
        seen = 0
        for _ in range(n):
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)  # the tutorials' line; a no-op on the CPU
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss.item()  # what a user's loop logs; it also waits for the step, as the engine's does
            seen += y.numel()
        return seen

    def rate(self, n: int, clock: Clock = time.perf_counter) -> float:
        """Images per second over ``n`` steps."""
        return rate(lambda: self.steps(n), clock)
