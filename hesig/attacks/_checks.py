"""Parameter checks shared by the attacks that train a network (inverse network, shadow model)."""

from __future__ import annotations

import math

from ..core.errors import InvalidValueError


def check_training(epochs: int, batch_size: int, lr: float) -> None:
    """Raise a one-line InvalidValueError unless epochs, batch_size >= 1 are integers and lr > 0 is finite."""
    if int(epochs) != epochs or epochs < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise InvalidValueError("epochs and batch_size must be integers >= 1")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidValueError(f"lr must be a finite number > 0, got {lr!r}")
