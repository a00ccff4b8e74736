"""What a client policy costs honest users: top-1 accuracy of the class the client acts on."""

from __future__ import annotations

import numpy as np
import torch

from ..core.runtime import resolve_device
from ..oracles.policies import ClientPolicy, parse_client_policy


@torch.inference_mode()
def honest_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    policy: ClientPolicy | str, *, seed: int = 0, device: str | torch.device | None = None,
                    batch_size: int = 1000) -> float:
    """Accuracy of single honest inference under ``policy``: images float32 [n, C, H, W] in [0, 1],
    labels int [n]. The input gets the policy's fresh noise, the logits its flooding and rounding,
    and the released class its randomized response (seeded: the same seed, the same number)."""
    policy = parse_client_policy(policy)
    device = resolve_device(device)
    model = model.to(device).eval()
    rng = policy.rng(seed)
    noise = torch.Generator(device).manual_seed(int(seed))
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        if policy.input_noise:
            x = x + policy.input_noise * torch.randn(x.shape, generator=noise, device=device)
        logits = model(x).double().cpu().numpy().T
        top = policy.released_top(logits, rng)
        correct += int((top == np.asarray(labels[start:start + batch_size])).sum())
    return correct / images.shape[0]


__all__ = ["honest_accuracy"]
