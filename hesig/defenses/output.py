"""Output defenses against vicious classifiers (Malekzadeh & Gunduz, Appendix I).

Each defense maps the vector the user would release, ``y`` float32 [n, N], to what is actually
sent. Task accuracy is then argmax of the defended vector. Specs (``parse_output_defense``):

* ``none``        -- release ``y`` as is;
* ``round:q``     -- round every entry to ``q`` decimal digits (their I, "truncate/round");
* ``noise:sigma`` -- add zero-mean Gaussian noise of standard deviation ``sigma`` (seeded);
* ``topk:k``      -- keep the ``k`` largest entries, set the rest to 0 (top-k release);
* ``argmax``      -- a one-hot vector at argmax: only the label leaves (their I, case 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import InvalidValueError, ShapeError

KINDS = ("none", "round", "noise", "topk", "argmax")


@dataclass(frozen=True)
class OutputDefense:
    """A defense ``kind`` with its ``value`` (q, sigma or k; unused for none/argmax)."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidValueError(f"unknown output defense '{self.kind}' (choose from {', '.join(KINDS)})")
        v = self.value
        if self.kind == "round" and not (float(v).is_integer() and 0 <= v <= 12):
            raise InvalidValueError(f"round:q needs an integer q in 0..12 decimals, got {v}")
        if self.kind == "noise" and not (math.isfinite(v) and v >= 0):
            raise InvalidValueError(f"noise:sigma needs sigma >= 0, got {v}")
        if self.kind == "topk" and not (float(v).is_integer() and v >= 1):
            raise InvalidValueError(f"topk:k needs an integer k >= 1, got {v}")

    @property
    def spec(self) -> str:
        return self.kind if self.kind in ("none", "argmax") else f"{self.kind}:{self.value:g}"

    def apply(self, outputs: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Defended copy of ``outputs`` [n, N]; noise is drawn from a generator seeded with ``seed``."""
        if outputs.ndim != 2:
            raise ShapeError(f"outputs must be [n, N], got {list(outputs.shape)}")
        y = outputs.detach().float()
        if self.kind == "none":
            return y.clone()
        if self.kind == "round":
            scale = 10.0 ** int(self.value)
            return torch.round(y * scale) / scale
        if self.kind == "noise":
            gen = torch.Generator().manual_seed(int(seed))
            return y + float(self.value) * torch.randn(y.shape, generator=gen).to(y.device)
        if self.kind == "topk":
            k = min(int(self.value), y.shape[1])
            top = y.topk(k, dim=1)
            return torch.zeros_like(y).scatter_(1, top.indices, top.values)
        return torch.zeros_like(y).scatter_(1, y.argmax(1, keepdim=True), 1.0)


def parse_output_defense(text: str) -> OutputDefense:
    """``"round:2"`` -> OutputDefense("round", 2.0); see the module docstring for the forms."""
    text = str(text).strip()
    kind, _, value = text.partition(":")
    if kind in ("none", "argmax"):
        if value:
            raise InvalidValueError(f"output defense '{kind}' takes no value, got '{text}'")
        return OutputDefense(kind)
    if kind not in KINDS:
        raise InvalidValueError(f"unknown output defense '{text}' (use none, round:q, noise:sigma, topk:k or argmax)")
    try:
        number = float(value)
    except ValueError:
        raise InvalidValueError(f"output defense '{text}' needs a number after '{kind}:'") from None
    return OutputDefense(kind, number)


__all__ = ["OutputDefense", "parse_output_defense", "KINDS"]
