"""Is a classifier vicious? The fine-tuning test of Malekzadeh & Gunduz, Appendix I.2, eq. (19)-(20).

An auditor holds the model F (white box) and a few fresh labelled samples D^test+ of the claimed
task. An honest F already sits near an optimum of the task loss, so a little more training on
the task barely moves its outputs; a vicious F was pulled away from that optimum by the
reconstruction term, and task training pulls it back, changing its outputs more.

* fine-tune a copy of F with cross-entropy on the K samples of D^test+ (``rounds`` full-batch
  Adam steps, train mode) -> F+;
* eq. (19): ``C = 1/M sum_m cos(F(x_m), F+(x_m))`` over M probe images (raw outputs, logits);
* eq. (20): ``v = (1 - C) / 2``, the vicious-likelihood; they call a model honest only if
  ``v <= 0.01``.

Their public code does not implement this; the round-by-round cosine is returned too, so the
curve of their Figure 6 can be drawn.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import nn

from ...core.errors import InvalidValueError

#: The paper's decision threshold on v.
HONEST_THRESHOLD = 0.01


@torch.no_grad()
def _outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])


def cosine_similarity(before: torch.Tensor, after: torch.Tensor) -> float:
    """Eq. (19): mean over rows of the cosine between ``before`` [M, N] and ``after`` [M, N]."""
    return float(Fn.cosine_similarity(before.double(), after.double(), dim=1, eps=1e-12).mean())


def vicious_likelihood(classifier: nn.Module, finetune_images: torch.Tensor, finetune_labels: torch.Tensor,
                       probe_images: torch.Tensor, *, rounds: int = 10, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Fine-tune a copy of ``classifier`` on (``finetune_images`` [K, C, H, W], ``finetune_labels`` [K]).

    Returns ``{"cosine": C after the last round, "v": (1 - C) / 2, "cosine_by_round": [C_1 ... C_rounds],
    "finetune_size": K, "probe_size": M, "rounds": rounds, "lr": lr}``. ``classifier`` is not modified.
    """
    if int(rounds) < 1:
        raise InvalidValueError(f"rounds must be >= 1, got {rounds}")
    if not (math.isfinite(lr) and lr > 0):
        raise InvalidValueError(f"lr must be > 0, got {lr}")
    if len(finetune_images) < 1 or len(probe_images) < 1:
        raise InvalidValueError("the detection needs at least one fine-tuning and one probe image")
    torch.manual_seed(int(seed))
    before = _outputs(classifier, probe_images)
    tuned = copy.deepcopy(classifier)
    device = next(tuned.parameters()).device
    opt = torch.optim.Adam(tuned.parameters(), lr=float(lr))
    x, y = finetune_images.to(device), finetune_labels.to(device)
    by_round = []
    for _ in range(int(rounds)):
        tuned.train()
        loss = Fn.cross_entropy(tuned(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        by_round.append(cosine_similarity(before, _outputs(tuned, probe_images)))
    cos = by_round[-1]
    return {"cosine": cos, "v": (1.0 - cos) / 2.0, "cosine_by_round": by_round, "finetune_size": int(len(finetune_images)),
            "probe_size": int(len(probe_images)), "rounds": int(rounds), "lr": float(lr)}


__all__ = ["vicious_likelihood", "cosine_similarity", "HONEST_THRESHOLD"]
