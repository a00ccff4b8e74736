"""Supervised training of target (and evaluator) classifiers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.runtime import seeded_generator
from .training import train_epochs


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2048) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``images`` [N,C,H,W] against ``labels`` [N]."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / max(1, len(images))


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10,
                     batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True) -> list[float]:
    """Train with Adam + cosine learning-rate decay and cross-entropy; returns per-epoch mean loss.

    ``images`` float32 [N,C,H,W] in [0,1]; ``labels`` int64 [N]. Deterministic for a given seed on CPU.
    """
    gen = seeded_generator(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(images[idx].to(device)), labels[idx].to(device))

    history = []
    for epoch in train_epochs([opt], loss_of_batch, len(images), batch_size=batch_size, epochs=epochs, generator=gen,
                              modules=[model], schedulers=[sched], desc="train", progress=progress):
        history.append(epoch.mean_loss)
        epoch.show(loss=f"{history[-1]:.4f}")
    model.eval()
    return history
