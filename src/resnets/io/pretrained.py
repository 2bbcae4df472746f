"""Pretrained ImageNet weights from the caches that torchvision and timm keep on this machine: never downloaded.

``create_model(name, pretrained=True)`` and ``resnets train --pretrained`` look in two places, in this order:

- torchvision's: ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``; ``TORCH_HOME`` defaults to
  ``~/.cache/torch``), under torchvision's own file names (``resnet18-f37072fd.pth``), its default weights first;
- timm's, in the Hugging Face hub cache: ``$HF_HUB_CACHE/models--timm--<name>.<tag>/snapshots/*/model.safetensors``
  (``HF_HUB_CACHE`` defaults to ``$HF_HOME/hub``, ``HF_HOME`` to ``~/.cache/huggingface``), timm's default tag first.

Our ImageNet models use torchvision's and timm's module names, so either file loads as it is, through the one
reader and loader of weight files (:mod:`resnets.io.weight_files`). When neither is there, the error names the
exact file and folder to put it in, and ``--weights FILE`` for a file kept elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resnets.errors import CheckpointError
from resnets.io.weight_files import LoadedFile, load_weights, read_weight_file
from resnets.models.base import SkipNetwork


@dataclass(frozen=True)
class Published:
    """Where a model's ImageNet weights are published under names this module can look for."""

    torchvision: tuple[str, ...] = ()  # torchvision's file names, its DEFAULT weights first
    timm: str = ""  # timm's name for the architecture, with its default tag: "resnet50.a1_in1k"


#: The models whose ImageNet weights torchvision or timm publish (file names from torchvision 0.29's model
#: builders; timm's default tags from timm 1.0's pretrained configs). Every one loads without renaming a key.
PUBLISHED: dict[str, Published] = {
    "resnet18": Published(("resnet18-f37072fd.pth",), "resnet18.a1_in1k"),
    "resnet34": Published(("resnet34-b627a593.pth",), "resnet34.a1_in1k"),
    "resnet50": Published(("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"), "resnet50.a1_in1k"),
    "resnet101": Published(("resnet101-cd907fc2.pth", "resnet101-63fe2227.pth"), "resnet101.a1h_in1k"),
    "resnet152": Published(("resnet152-f82ba261.pth", "resnet152-394f9c45.pth"), "resnet152.a1h_in1k"),
    "resnext50_32x4d": Published(
        ("resnext50_32x4d-1a0047aa.pth", "resnext50_32x4d-7cdf4587.pth"), "resnext50_32x4d.a1h_in1k"
    ),
    "resnext101_32x8d": Published(
        ("resnext101_32x8d-110c445d.pth", "resnext101_32x8d-8ba56ff5.pth"), "resnext101_32x8d.tv_in1k"
    ),
    "wide_resnet50_2": Published(
        ("wide_resnet50_2-9ba9bcbe.pth", "wide_resnet50_2-95faca4d.pth"), "wide_resnet50_2.racm_in1k"
    ),
    "wide_resnet101_2": Published(
        ("wide_resnet101_2-d733dc28.pth", "wide_resnet101_2-32ee1156.pth"), "wide_resnet101_2.tv_in1k"
    ),
    "densenet121": Published(("densenet121-a639ec97.pth",), "densenet121.ra_in1k"),
    "densenet169": Published(("densenet169-b2777c0a.pth",), "densenet169.tv_in1k"),
    "densenet201": Published(("densenet201-c1103571.pth",), "densenet201.tv_in1k"),
    "resnet50d": Published(timm="resnet50d.ra2_in1k"),
    "se_resnet50": Published(timm="seresnet50.a1_in1k"),
}


def torchvision_cache() -> Path:
    """The folder torchvision downloads weights into: ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hugging_face_cache() -> Path:
    """The Hugging Face hub cache that timm downloads into, by the hub's own environment variables."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _timm_files(published: Published) -> list[Path]:
    """model.safetensors of every cached snapshot of the architecture: the default tag first, then the others;
    within a repository, the snapshot that ``refs/main`` names first."""
    if not published.timm:
        return []
    arch = published.timm.partition(".")[0]
    hub = hugging_face_cache()
    default = hub / f"models--timm--{published.timm}"
    repos = [default, *sorted(p for p in hub.glob(f"models--timm--{arch}.*") if p != default)]
    files = []
    for repo in repos:
        main = repo / "refs" / "main"
        first = main.read_text().strip() if main.is_file() else ""
        snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.name != first)
        files += [s / "model.safetensors" for s in snapshots if (s / "model.safetensors").is_file()]
    return files


def find_pretrained(name: str) -> tuple[Path, str]:
    """(file, which cache) of ``name``'s ImageNet weights on this machine; a CheckpointError naming what to put
    where when neither cache holds them."""
    published = PUBLISHED.get(name)
    if published is None:
        raise CheckpointError(
            f"no pretrained weights are published for {name!r} (torchvision's and timm's ImageNet weights fit "
            f"{', '.join(PUBLISHED)}); train it, or pass --weights FILE"
        )
    folder = torchvision_cache()
    for file in published.torchvision:
        if (folder / file).is_file():
            return folder / file, "torchvision's cache"
    timm = _timm_files(published)
    if timm:
        return timm[0], "timm's cache"
    where = [f"torchvision's {published.torchvision[0]} in {folder}"] if published.torchvision else []
    if published.timm:
        where.append(
            f"timm's model.safetensors in {hugging_face_cache() / f'models--timm--{published.timm}'}/snapshots/*"
        )
    raise CheckpointError(
        f"no pretrained weights for {name!r} on this machine (resnets never downloads): put {' or '.join(where)}, "
        "or pass --weights FILE"
    )


def load_pretrained(model: SkipNetwork, name: str) -> LoadedFile:
    """Fill ``model`` (built as ``name``) with the cached ImageNet weights; a classifier of another size (or none,
    as in a features-only model) is kept as built, as timm's ``pretrained=True`` keeps it."""
    path, cache = find_pretrained(name)
    state = read_weight_file(path)
    head = model.classifier_name + "."
    own = model.state_dict()
    fits = all(key in own and own[key].shape == value.shape for key, value in state.items() if key.startswith(head))
    report = load_weights(model, state, reset_head=not fits or not any(key.startswith(head) for key in own))
    return LoadedFile(path, cache, report)
