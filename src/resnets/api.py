"""The package's own ``create_model``: the registry's, plus ``pretrained=True`` from the local weight caches.

It lives on the top floor because it joins two floors that must not know each other: building a model (the
registry, in ``resnets.models``) and reading weight files (``resnets.io``, the one reader and loader of every
command). timm's ``create_model(name, pretrained=True)`` asks for both at once, and so does ours: the registry
builds the network and hands it to the loader before any features-only wrapper goes around it.
"""

from __future__ import annotations

from typing import Any

from resnets.models.registry import create_model as build
from resnets.models.registry import document_options


@document_options
def create_model(name: str, *, pretrained: bool = False, **kwargs: Any) -> Any:
    """Build the registered model ``name``, taking every argument of :func:`resnets.models.create_model`.

    ``pretrained=True`` starts from the ImageNet weights that torchvision or timm keep in their local caches
    (never downloaded; see :mod:`resnets.io.pretrained`); a classifier of another size stays as built, new.
    """
    if not pretrained:
        return build(name, **kwargs)
    from resnets.io.pretrained import load_pretrained  # the file readers load only when weights are asked for

    return build(name, prepare=lambda model: load_pretrained(model, name), **kwargs)
