"""Options that the chosen blocks or model kind cannot use are errors, not silent no-ops.

torchvision's ``BasicBlock`` raises on ``groups``/``base_width`` it cannot use; the configs do the same one
level up. Each config says which of its fields do not apply to what it builds, and why;
:func:`refuse_inapplicable` refuses every such field set away from its dataclass default, in one message that
also lists the options that do apply. A field left at its default is never refused (as torchvision accepts
``groups=1``), so every registered variant keeps building and a value that matters is never dropped unseen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: Why stochastic depth does not apply without shortcuts: a block's output is then F(x) alone.
PLAIN_DROP_PATH = "plain nets (shortcut='none'): a dropped block has no shortcut to fall back on and zeroes the signal"


def field_default(field: dataclasses.Field) -> Any:
    """The value a dataclass field takes when it is not given."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"field {field.name!r} has no default, so it cannot be told apart from a given option")


def refuse_inapplicable(config: Any, reasons: Mapping[str, str]) -> None:
    """Raise ValueError naming each field of ``config`` listed in ``reasons`` whose value is not its default.

    ``reasons`` maps a field that does not apply to the phrase completing "does not apply to ...", e.g.
    ``{"dropout": "bottleneck blocks, only to preact_basic blocks"}``; fields sharing a phrase are reported
    together. Every field not in ``reasons`` is listed as an option of this model, so the message says both
    what was wrong and what can be set instead.
    """
    fields = dataclasses.fields(config)
    given: dict[str, list[str]] = {}
    defaults: list[str] = []
    for field in fields:
        if field.name not in reasons:
            continue
        value, default = getattr(config, field.name), field_default(field)
        if value != default:
            given.setdefault(reasons[field.name], []).append(f"{field.name}={value!r}")
            defaults.append(f"{field.name}={default!r}")
    if not given:
        return
    parts = []
    for why, names in given.items():
        subject = f"option {names[0]} does" if len(names) == 1 else f"options {', '.join(names)} do"
        parts.append(f"{subject} not apply to {why}")
    fix = "leave it at its default" if len(defaults) == 1 else "leave them at their defaults"
    applicable = sorted(field.name for field in fields if field.name not in reasons)
    raise ValueError(
        f"{'; '.join(parts)}; {fix} ({', '.join(defaults)}); options for this model: {', '.join(applicable)}"
    )
