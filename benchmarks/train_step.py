"""Training throughput (images/s) of resnet20 on 32x32 images: a straightforward baseline against ours.

Baseline: a per-sample, torchvision-style Dataset (pad 4, random crop, flip, normalise, one image at a
time) behind torch's DataLoader, eager fp32 NCHW. Ours: the in-memory BatchLoader with batched
augmentation and the memory format / precision that ``resnets train`` picks on this machine (also timed
with channels_last forced on, for the record). Same model, batch, optimizer and steps; both measured in
this run, so only the ratio is meaningful. Synthetic data: nothing is downloaded.

    python benchmarks/train_step.py [--steps 8] [--rounds 3] [--batch-size 128] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from resnets import create_model
from resnets.data import ArrayDataset, BatchLoader
from resnets.data.augment import BatchAugment
from resnets.device import resolve_precision

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # CIFAR-10-like statistics, in [0, 1] units


class PerSampleDataset(Dataset):
    """What a first implementation does: augment and normalise each image on its own in __getitem__."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> None:
        self.images, self.targets, self.generator = images, targets, generator
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i].float().div(255.0)  # (3, 32, 32)
        image = F.pad(image, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,), generator=self.generator).tolist()
        image = image[:, top : top + 32, left : left + 32]
        if torch.rand(1, generator=self.generator).item() < 0.5:
            image = image.flip(-1)
        return (image - self.mean) / self.std, self.targets[i]


class Variant:
    """A fresh resnet20 and its SGD, stepping on batches from one loader; timed in rounds."""

    def __init__(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], channels_last: bool, amp: bool) -> None:
        torch.manual_seed(0)
        self.model = create_model("resnet20", num_classes=10)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        self.batches, self.amp = batches, amp
        self.rates: list[float] = []

    def run(self, steps: int, timed: bool = True) -> None:
        seen, start = 0, time.perf_counter()
        for _ in range(steps):
            x, y = next(self.batches)  # the data path is inside the timing, as in training
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
                loss = F.cross_entropy(self.model(x).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += y.numel()
        if timed:
            self.rates.append(seen / (time.perf_counter() - start))

    @property
    def rate(self) -> float:
        """Median over rounds: robust to other processes stealing a core for a while."""
        return statistics.median(self.rates)


def forever(make: Callable[[int], Iterator]) -> Iterator:
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; variants alternate within each round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4096, help="synthetic training images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 10, (args.samples,), generator=generator)

    baseline_loader = DataLoader(
        PerSampleDataset(images, targets, generator),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    precision = resolve_precision(torch.device("cpu"), None, None)

    def ours_loader(channels_last: bool) -> Iterator:
        loader = BatchLoader(
            ArrayDataset(images, targets),
            args.batch_size,
            shuffle=True,
            seed=0,
            augment=BatchAugment(flip=True),
            mean=MEAN,
            std=STD,
            drop_last=True,
            layout="image",
            channels_last=channels_last,
        )
        return forever(loader.epoch_batches)

    variants = {
        "baseline": Variant(forever(lambda e: iter(baseline_loader)), False, False),
        "ours": Variant(ours_loader(precision.channels_last), precision.channels_last, precision.amp),
        "ours_cl": Variant(ours_loader(True), True, precision.amp),
    }
    for variant in variants.values():
        variant.run(args.warmup, timed=False)
    for _ in range(args.rounds):
        for variant in variants.values():
            variant.run(args.steps)
    baseline, ours, forced_cl = (variants[k].rate for k in ("baseline", "ours", "ours_cl"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}, batch {args.batch_size}, "
        f"{args.rounds} rounds of {args.steps} timed steps, median"
    )
    print(f"baseline (per-sample Dataset + DataLoader, fp32 NCHW): {baseline:8.1f} images/s")
    print(f"ours (BatchLoader, channels_last={precision.channels_last}, amp={precision.amp}):    {ours:8.1f} images/s")
    print(f"ours with channels_last forced on:                      {forced_cl:8.1f} images/s")
    print(f"speed-up ours / baseline: {ours / baseline:.2f}x (channels_last forced: {forced_cl / baseline:.2f}x)")


if __name__ == "__main__":
    main()
