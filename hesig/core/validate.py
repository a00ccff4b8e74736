"""Validation of artifact metadata on load: one line naming the file and the field.

Metadata comes from files a user hands over, so it is hostile until checked: every field a
loader uses is checked for type and range here before anything is built from it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import CheckpointError


def check_field(meta: dict[str, Any], key: str, path: str | Path, expected: str, ok: Callable[[Any], bool]) -> Any:
    """``meta[key]`` if ``ok`` accepts it, else CheckpointError naming ``path``, ``key`` and ``expected``."""
    value = meta.get(key) if isinstance(meta, dict) else None
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CheckpointError(f"{path}: metadata field '{key}' must be {expected}, got {shown}")
    return value


def is_int(value: Any, low: int | None = None, high: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low) and (high is None or value <= high))


def is_number(value: Any, low: float | None = None, high: float | None = None) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (low is None or value >= low) and (high is None or value <= high))


def is_shape(value: Any, length: int = 3, largest: int = 4096) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == length and all(is_int(v, 1, largest) for v in value)


def is_choice(value: Any, choices: Iterable[str]) -> bool:
    return isinstance(value, str) and value in tuple(choices)
