"""White-box model inversion by regularised maximum likelihood (He et al., ACSAC 2019, Algorithm 1).

Threat model: the untrusted party holds the edge part f_θ1 of a split model (white box) and
observes the intermediate output v0 = f_θ1(x0) of a secret input x0. It returns

    x* = argmin_x ||f_θ1(x) - v0||²₂ + λ·TV(x)                                   (eq. 3c)

    TV(x) = Σ_{i,j} (|x_{i+1,j} - x_{i,j}|² + |x_{i,j+1} - x_{i,j}|²)^{β/2}        (eq. 3b)

found by Adam from a constant-gray start (0.5 everywhere). Knowledge: :class:`WhiteBoxEdge`
(the edge and its input shape); observation: v0 [n, ...]. The attacker never sees x0 and makes
no queries.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..base import Attack, WhiteBoxEdge
from ...core.errors import InvalidValueError, ShapeError

#: Keeps the gradient of (·)^{β/2} finite where neighbouring pixels are equal (β < 2).
TV_EPS = 1e-8


def total_variation(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Eq. 3b per image: x [n, C, H, W] -> [n]. Differences on the common (H-1)x(W-1) grid.

    β = 2 is the squared (smooth) TV; β = 1 the isotropic TV of the paper's text (their public
    code effectively used β = 2).
    """
    dx = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dy = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    sq = dx.pow(2) + dy.pow(2)
    terms = sq if beta == 2 else (sq + TV_EPS).pow(beta / 2)
    return terms.flatten(1).sum(1)


class RMLE(Attack):
    """Batched rMLE attack. Parameters are validated at construction.

    iterations: Adam steps T (paper: 500 for shallow splits, 5000 for deep ones).
    lr: Adam step size (paper: 1e-2 shallow, 1e-3 deep).
    tv_weight: λ of eq. 3c. tv_beta: β of eq. 3b.
    init: the constant-gray start value. clip: project x into [0, 1] after every step (images
    live there; the paper does not say -- see the sweep in results/ for its effect).
    init_noise: standard deviation of Gaussian jitter added to the gray start (seeded by ``seed``).
    0 is the paper's constant init. Behind a ReLU a constant image can map to an all-zero feature
    map, whose gradient is exactly zero, and then the paper's init never moves (we met a trained
    LeNet-5 whose ReLU2 did this); a jitter breaks the tie. results/collab_inference/rmle_sweep.json
    compares both starts.
    """

    knowledge = WhiteBoxEdge
    name = "rMLE"

    def __init__(self, *, iterations: int = 500, lr: float = 1e-2, tv_weight: float = 0.0, tv_beta: float = 1.0,
                 init: float = 0.5, clip: bool = True, init_noise: float = 0.0, seed: int = 0):
        if int(iterations) != iterations or iterations < 1:
            raise InvalidValueError(f"iterations must be an integer >= 1, got {iterations}")
        for name, value in (("lr", lr), ("tv_weight", tv_weight), ("tv_beta", tv_beta), ("init", init),
                            ("init_noise", init_noise)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise InvalidValueError(f"{name} must be a finite number, got {value!r}")
        if lr <= 0 or tv_weight < 0 or tv_beta <= 0 or init_noise < 0:
            raise InvalidValueError("lr and tv_beta must be > 0, tv_weight and init_noise >= 0")
        self.iterations, self.lr, self.tv_weight, self.tv_beta = int(iterations), float(lr), float(tv_weight), float(tv_beta)
        self.init, self.clip, self.init_noise, self.seed = float(init), bool(clip), float(init_noise), int(seed)

    def initial_images(self, n: int, in_shape: tuple[int, int, int]) -> torch.Tensor:
        """The start x⁽⁰⁾ [n, *in_shape]: gray ``init`` plus the seeded jitter. Generate it once for
        a whole set and pass slices to :meth:`reconstruct`, so chunking does not change any image's start."""
        x = torch.full((n, *in_shape), self.init)
        if self.init_noise > 0:
            x += self.init_noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed))
        return x

    def _fit(self, knowledge: WhiteBoxEdge) -> None:
        self.edge, self.in_shape = knowledge.edge.eval(), knowledge.in_shape

    def _reconstruct(self, observed: torch.Tensor, initial: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Recover inputs [n, *in_shape] in [0, 1] from observed edge outputs v0 [n, ...].

        ``initial`` [n, *in_shape]: the start (default :meth:`initial_images`). Details:
        ``final_feature_distance`` [n] = ||f_θ1(x*) - v0||²₂ per image, ``iterations``.

        The loss is summed over images, so each image's gradient -- and, Adam being per
        coordinate, its whole trajectory -- is independent of the others in the batch.
        """
        device = next(self.edge.parameters()).device
        observed = observed.to(device)
        n = observed.shape[0]
        x = self.initial_images(n, self.in_shape) if initial is None else initial.detach().clone().float()
        if tuple(x.shape) != (n, *self.in_shape):
            raise ShapeError(f"initial images have shape {list(x.shape)}, expected {[n, *self.in_shape]}")
        x = x.to(device).requires_grad_(True)
        with torch.no_grad():
            probe = self.edge(x[:1])
        if probe.shape[1:] != observed.shape[1:]:
            raise ShapeError(f"the edge model outputs {list(probe.shape[1:])} per input, observed features are "
                             f"{list(observed.shape[1:])}")
        params = list(self.edge.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        opt = torch.optim.Adam([x], lr=self.lr)
        try:
            for _ in range(self.iterations):
                dist = (self.edge(x) - observed).flatten(1).pow(2).sum(1)
                loss = dist + self.tv_weight * total_variation(x, self.tv_beta)
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
                if self.clip:
                    with torch.no_grad():
                        x.clamp_(0.0, 1.0)
            with torch.no_grad():
                final = (self.edge(x) - observed).flatten(1).pow(2).sum(1)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        return x.detach().clamp(0.0, 1.0).cpu(), {"final_feature_distance": final.cpu().tolist(),
                                                  "iterations": self.iterations}
