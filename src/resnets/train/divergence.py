"""An optimiser step that overflows is a divergence at its step, not a traceback.

torch turns a step size beyond float32's range into ``RuntimeError: value cannot be converted to type float
without overflow`` (an lr of 1e300, or lr x lr_decay at a milestone, or AdamW's lr x weight_decay). The recipe's
rules refuse such values where they can (:mod:`resnets.train.recipes`); a product of allowed ones that still
overflows ends here, the same way a non-finite loss does: one line with the step, the last good checkpoint kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resnets.errors import TrainingDivergedError, first_line
from resnets.runs.checkpoint import committed_step


@contextmanager
def overflow_is_divergence(step: int, lr: float, checkpoints: Path) -> Iterator[None]:
    """Turn an overflowing optimiser step (``step``, taken at ``lr``) into a TrainingDivergedError."""
    try:
        yield
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        saved = committed_step(checkpoints)
        kept = f"the last good checkpoint (step {saved}) is kept" if saved is not None else "nothing was saved"
        raise TrainingDivergedError(
            f"the optimiser step {step} overflowed float32 (lr {lr:g}: {first_line(error)}); {kept}; lower the "
            "learning rate, lr_decay or weight decay",
            step=step,
        ) from None
