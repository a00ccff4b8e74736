"""Black-box model inversion with an Inverse-Network (He et al., ACSAC 2019, Algorithm 2).

Threat model: the untrusted party cannot see the edge part f_θ1 but can query it -- send any x,
observe v = f_θ1(x). It queries with a bag X (the target's training set, a disjoint set from the
same distribution, or standard Gaussian noise), then fits g ≈ f_θ1⁻¹ by

    g = argmin_g (1/m) Σ_i ||g(f_θ1(x_i)) - x_i||²₂                                 (eq. 4)

and recovers a secret input as x̂0 = g(v0). One query per element of X; none per victim.
Knowledge: :class:`EdgeQueryAccess` (the pairs (x_i, f_θ1(x_i))); observation: v0 [n, ...].

Architectures (``design``):

* ``paper`` -- He et al.'s MNIST inverses, defined for LeNet-5's two split points only:
  conv1 [8, 24, 24] -> Conv2d(8, 1, k5, padding 4);
  ReLU2 [16, 8, 8] -> ConvT(16, 8, k5), ReLU, ConvT(8, 1, k5, stride 2, output_padding 1).
* ``auto`` -- ours, for any split: a feature map [C, h, w] goes through Conv3x3(C->32), ReLU,
  bilinear resize to the input's H x W, Conv3x3(32->16), ReLU, Conv3x3(16->C_in); a flat vector
  [d] through Linear(d->512), ReLU, Linear(512->C_in·H·W).

Both are Xavier-initialised (the paper) and trained with Adam at lr 1e-3 (the paper's §3.2
optimiser for every model; its §5.1 says SGD).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from .._checks import check_training
from ..base import Attack, EdgeQueryAccess
from ...core.defaults import INVERSE_DESIGNS as DESIGNS
from ...core.defaults import INVERSE_TRAINING
from ...core.errors import InvalidValueError, ShapeError
from ...models.training import train_epochs


class _Resize(nn.Module):
    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def inverse_architecture(feature_shape: tuple[int, ...], in_shape: tuple[int, int, int],
                         design: str = "auto") -> nn.Sequential:
    """An untrained inverse mapping features [*feature_shape] to inputs [*in_shape] (see module doc)."""
    feature_shape, in_shape = tuple(int(v) for v in feature_shape), tuple(int(v) for v in in_shape)
    c_in, h, w = in_shape
    if design == "paper":
        if in_shape == (1, 28, 28) and feature_shape == (8, 24, 24):
            return nn.Sequential(nn.Conv2d(8, 1, 5, padding=4))
        if in_shape == (1, 28, 28) and feature_shape == (16, 8, 8):
            return nn.Sequential(nn.ConvTranspose2d(16, 8, 5), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 1, 5, stride=2, output_padding=1))
        raise ShapeError(f"the paper's inverse networks exist for LeNet-5 conv1 [8, 24, 24] and ReLU2 [16, 8, 8] "
                         f"features of 1x28x28 inputs, not {list(feature_shape)}; use design 'auto'")
    if design != "auto":
        raise InvalidValueError(f"unknown inverse-network design {design!r} (choose from {', '.join(DESIGNS)})")
    if len(feature_shape) == 3:
        # narrow on purpose: it trains at every split of the split-point study on one CPU core
        return nn.Sequential(nn.Conv2d(feature_shape[0], 32, 3, padding=1), nn.ReLU(), _Resize((h, w)),
                             nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, c_in, 3, padding=1))
    if len(feature_shape) == 1:
        return nn.Sequential(nn.Linear(feature_shape[0], 512), nn.ReLU(), nn.Linear(512, c_in * h * w),
                             nn.Unflatten(1, in_shape))
    raise ShapeError(f"features must be [C, h, w] maps or flat [d] vectors, got {list(feature_shape)}")


def _xavier(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class InverseNetwork(Attack):
    """Fit g on (f_θ1(x_i), x_i) pairs, then invert observed features. Parameters validated here.

    design: ``auto`` or ``paper`` (module doc). epochs, batch_size, lr: Adam training of eq. 4.
    seed: weight init and batch order. After :meth:`fit`, ``training`` holds
    ``{"queries", "epochs", "seconds", "train_loss"}`` (per-epoch mean of eq. 4).
    """

    knowledge = EdgeQueryAccess
    name = "inverse network"

    def __init__(self, *, design: str = "auto", epochs: int = INVERSE_TRAINING["epochs"],
                 batch_size: int = INVERSE_TRAINING["batch_size"], lr: float = INVERSE_TRAINING["lr"],
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = False):
        if design not in DESIGNS:
            raise InvalidValueError(f"unknown inverse-network design {design!r} (choose from {', '.join(DESIGNS)})")
        check_training(epochs, batch_size, lr)
        self.design, self.epochs, self.batch_size, self.lr = design, int(epochs), int(batch_size), float(lr)
        self.seed, self.device, self.progress = int(seed), torch.device(device), progress
        self.network: nn.Sequential | None = None
        self.training: dict[str, Any] = {}

    @property
    def queries(self) -> int:
        return self.training.get("queries", 0)

    def _fit(self, knowledge: EdgeQueryAccess) -> None:
        """Train g on the query answers v_i = f_θ1(x_i) [m, ...] and the queries x_i [m, C, H, W]."""
        features, inputs = knowledge.answers, knowledge.query_inputs
        torch.manual_seed(self.seed)
        net = inverse_architecture(tuple(features.shape[1:]), tuple(inputs.shape[1:]), self.design)
        net.apply(_xavier)
        net.to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        m, history, total = features.shape[0], [], 0.0

        def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
            nonlocal total
            v, x = features[idx].to(self.device), inputs[idx].to(self.device)
            # eq. 4: per-image squared L2 in pixel space, averaged over the batch
            loss = (net(v) - x).flatten(1).pow(2).sum(1).mean()
            total += loss.item() * len(idx)
            return loss

        t0 = time.perf_counter()
        for epoch in train_epochs([opt], loss_of_batch, m, batch_size=self.batch_size, epochs=self.epochs,
                                  generator=gen, modules=[net], desc="inverse-network", progress=self.progress):
            history.append(total / m)
            total = 0.0
            epoch.show(loss=f"{history[-1]:.3f}")
        self.network, self.feature_shape = net.eval(), tuple(features.shape[1:])
        self.training = {"queries": knowledge.queries, "epochs": self.epochs, "seconds": time.perf_counter() - t0,
                         "train_loss": history}

    @torch.no_grad()
    def _reconstruct(self, observed: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, dict[str, Any]]:
        """x̂0 = g(v0) for observed features [n, ...] -> [n, C, H, W], clamped to [0, 1]."""
        if tuple(observed.shape[1:]) != self.feature_shape:
            raise ShapeError(f"observed features are {list(observed.shape[1:])} per input, the inverse network was "
                             f"trained on {list(self.feature_shape)}")
        out = [self.network(observed[s:s + batch_size].to(self.device)).cpu() for s in range(0, len(observed), batch_size)]
        return torch.cat(out).clamp(0.0, 1.0), {"training": self.training}
