"""Query-free model inversion through a shadow edge model (He et al., ACSAC 2019, Algorithm 3).

Threat model: the untrusted party holds the cloud part f_θ2 (its own layers) and a labelled set S
from the training distribution, but can neither see nor query the edge part f_θ1. It trains a
shadow g so that the composition classifies S:

    f'_θ1 = argmin_g (1/m) Σ_i CrossEntropy(f_θ2(g(x_i)), y_i)                   (eq. 6)

with f_θ2 frozen, then runs white-box rMLE (Algorithm 1) on g against the observed v0 = f_θ1(x0).

Structures (``structure``), the adversary's knowledge of the edge architecture:

* ``same`` -- the edge's own layer list, freshly initialised (the adversary knows the
  structure, not the weights).
* ``different`` -- every k x k convolution (k >= 4) replaced by a (k-2) x (k-2) and a 3 x 3
  convolution with a ReLU between (same receptive field and output size), every Linear(a->b) by
  Linear(a->b), ReLU, Linear(b->b). For LeNet-5 this is exactly He et al.'s Table 5: conv1 (one
  5x5) -> two 3x3 layers; ReLU2 (two 5x5) -> four 3x3 layers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_training
from ..errors import InvalidValueError, ShapeError

STRUCTURES = ("same", "different")


def _reset(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def shadow_architecture(edge: nn.Sequential, structure: str = "same") -> nn.Sequential:
    """An untrained shadow of ``edge`` (see module doc); its output shape equals the edge's."""
    if structure not in STRUCTURES:
        raise InvalidValueError(f"unknown shadow structure {structure!r} (choose from {', '.join(STRUCTURES)})")
    if structure == "same":
        shadow = copy.deepcopy(edge)
        shadow.apply(_reset)
        return shadow
    layers: list[nn.Module] = []
    changed = False
    for layer in edge.children():
        if isinstance(layer, nn.Conv2d) and min(layer.kernel_size) >= 4 and layer.stride == (1, 1) \
                and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1:
            k = layer.kernel_size
            layers += [nn.Conv2d(layer.in_channels, layer.out_channels, (k[0] - 2, k[1] - 2)), nn.ReLU(),
                       nn.Conv2d(layer.out_channels, layer.out_channels, 3)]
            changed = True
        elif isinstance(layer, nn.Linear):
            layers += [nn.Linear(layer.in_features, layer.out_features), nn.ReLU(),
                       nn.Linear(layer.out_features, layer.out_features)]
            changed = True
        else:
            fresh = copy.deepcopy(layer)
            fresh.apply(_reset)
            layers.append(fresh)
    if not changed:
        raise InvalidValueError("structure 'different' needs an unpadded stride-1 convolution with kernel >= 4 or a "
                                "Linear layer in the edge to restructure; this edge has none")
    return nn.Sequential(*layers)


@dataclass
class ShadowReport:
    structure: str
    epochs: int
    seconds: float
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: float = float("nan")


class ShadowModel:
    """Train a shadow edge through the frozen cloud (eq. 6). Parameters validated at construction.

    structure: ``same`` or ``different`` (module doc). epochs, batch_size, lr: Adam on eq. 6.
    seed: weight init and batch order.
    """

    def __init__(self, *, structure: str = "same", epochs: int = 5, batch_size: int = 128, lr: float = 1e-3,
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = False):
        if structure not in STRUCTURES:
            raise InvalidValueError(f"unknown shadow structure {structure!r} (choose from {', '.join(STRUCTURES)})")
        check_training(epochs, batch_size, lr)
        self.structure, self.epochs, self.batch_size, self.lr = structure, int(epochs), int(batch_size), float(lr)
        self.seed, self.device, self.progress = int(seed), torch.device(device), progress

    def fit(self, edge_template: nn.Sequential, cloud: nn.Module, images: torch.Tensor,
            labels: torch.Tensor) -> tuple[nn.Sequential, ShadowReport]:
        """Return (shadow [eval mode], report).

        ``edge_template``: a module with the edge's *structure* only -- its weights are reset or
        replaced, never read (pass a freshly built, untrained model's edge). ``cloud``: f_θ2,
        kept frozen. ``images`` [m, C, H, W] in [0, 1], ``labels`` [m] int64.
        """
        if images.ndim != 4 or labels.shape != (images.shape[0],) or images.shape[0] < 1:
            raise ShapeError(f"need images [m, C, H, W] and labels [m], got {list(images.shape)} and {list(labels.shape)}")
        torch.manual_seed(self.seed)
        shadow = shadow_architecture(edge_template, self.structure).to(self.device)
        cloud = cloud.to(self.device).eval()
        with torch.no_grad():
            try:
                cloud(shadow(images[:1].to(self.device)))
            except RuntimeError as exc:
                raise ShapeError(f"the shadow's output does not fit the cloud part: {str(exc).splitlines()[0]}") from None
        frozen = [(p, p.requires_grad) for p in cloud.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        opt = torch.optim.Adam(shadow.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.CrossEntropyLoss()
        m, history, correct = images.shape[0], [], 0
        t0 = time.perf_counter()
        bar = tqdm(total=self.epochs, desc=f"shadow ({self.structure})", unit="epoch", disable=not self.progress,
                   leave=False)
        try:
            shadow.train()
            for epoch in range(self.epochs):
                order = torch.randperm(m, generator=gen)
                total, correct = 0.0, 0
                for start in range(0, m, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    x, y = images[idx].to(self.device), labels[idx].to(self.device)
                    logits = cloud(shadow(x))
                    loss = loss_fn(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                    correct += (logits.argmax(1) == y).sum().item()
                history.append(total / m)
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.3f}")
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
            bar.close()
        return shadow.eval(), ShadowReport(self.structure, self.epochs, time.perf_counter() - t0, history, correct / m)
