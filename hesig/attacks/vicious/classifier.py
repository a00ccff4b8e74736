"""Vicious classifiers (Malekzadeh & Gunduz): a classifier F trained jointly with a decoder G.

The threat: a server trains F for a public task (say, digit recognition) and, secretly, so that
its N released outputs y^ = F(x) carry enough about x for a decoder G to rebuild it,
x~ = G(y^). The user sees only a classifier; the server needs only the outputs of one inference.

Algorithm 1 (their Appendix D), eq. (1), (3), (4):

* ``L^C`` = cross-entropy of the logits against the label (eq. 1);
* ``L^R(x~, x) = alpha * (1 - SSIM(x~, x)) + gamma * Huber_delta(x~, x)`` (eq. 3, SSIM as a
  loss; alpha = 15, gamma = 3, delta = 1 as in :data:`PAPER_LOSS`);
* F minimises ``beta^C L^C + beta^R L^R`` (eq. 4); G minimises ``beta^R L^R``; each has its own
  Adam (lr 1e-3, batch 250). One backward pass of eq. (4) gives both gradients because L^C does
  not depend on G;
* after each epoch eq. (4) is evaluated on a held-out validation split (10 % of the training
  split, their E.1) and the (F, G) pair of the best epoch is kept.

Released outputs: ``"logits"`` (G sees F's raw outputs) or ``"softmax"`` (G sees softmax(F(x)),
trained that way too). ``beta^R = 0`` is an honest classifier (no G is trained); ``beta^C = 0`` a
pure auto-encoder whose "classifier" is at chance.

What each party holds: the server trains both networks on its own labelled data
(:class:`LabelledData`, the knowledge :class:`ViciousAttack` receives); at inference it observes
only the released vectors y^ [n, N] and :meth:`ViciousAttack.reconstruct` (the trained
:class:`ViciousModel`'s G) turns them into images -- never seeing x. 0 queries: the victims'
inferences are the observation, the server chooses no inputs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import nn

from ..base import Attack, LabelledData
from ...core.defaults import VICIOUS_LOSS as PAPER_LOSS
from ...core.defaults import VICIOUS_NGF
from ...core.defaults import VICIOUS_RELEASES as RELEASES
from ...core.defaults import VICIOUS_TRAINING as PAPER_TRAINING
from ...core.errors import InvalidValueError, ShapeError
from ...evaluation.metrics import ssim_window
from ...models import build_model
from ...models.dcgan import DCGANDecoder
from ...models.training import train_epochs
#: Table 1's beta^R/beta^C ratios, logits rows then softmax rows.
TABLE1_LOGITS = ("0/1", "1/1", "3/1", "5/1", "1/0")
TABLE1_SOFTMAX = ("1/1", "5/1")


def parse_beta(text: str) -> tuple[float, float]:
    """``"3/1"`` -> ``(beta_R, beta_C) = (3.0, 1.0)``; the ratio is written beta^R/beta^C as in Table 1."""
    parts = str(text).strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        beta_r, beta_c = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidValueError(f"beta must be 'R/C' with two non-negative numbers, e.g. 3/1 (beta^R/beta^C), got '{text}'") from None
    if not (math.isfinite(beta_r) and math.isfinite(beta_c)) or beta_r < 0 or beta_c < 0:
        raise InvalidValueError(f"beta^R and beta^C must be finite and >= 0, got '{text}'")
    if beta_r == 0 and beta_c == 0:
        raise InvalidValueError("beta 0/0 trains nothing: at least one of beta^R, beta^C must be > 0")
    return beta_r, beta_c


def release(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """What the user sends back: ``logits`` [n, N] as they are, or their softmax."""
    if mode == "logits":
        return logits
    if mode == "softmax":
        return torch.softmax(logits, dim=1)
    raise InvalidValueError(f"unknown release '{mode}' (choose from {', '.join(RELEASES)})")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """[n, C, H, W] -> [n, C, size, size], bilinear, clamped to [0, 1] (their E.1 resizes every set to 32 x 32)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = Fn.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def _gaussian_1d(kernel: int, sigma: float, dtype, device) -> torch.Tensor:
    coords = torch.arange(kernel, dtype=dtype, device=device) - (kernel - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()


def differentiable_ssim(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over the batch (scalar, differentiable), equal to :func:`hesig.metrics.ssim_full_map`'s mean.

    The loss keeps the full-map convention (the border counts, so G is also pushed to draw the
    black background; an interior-only loss left a border haze that the Mahalanobis risk R
    punishes) while the reported metric is the papers' interior :func:`hesig.metrics.ssim`.
    Same definition as torchmetrics (gaussian window from :func:`ssim_window`, reflect padding,
    population statistics, C1 = 0.01^2, C2 = 0.03^2, data range 1, mean over all pixels), but the
    gaussian is applied as two 1-D convolutions over the five stacked moments: about 4x faster
    than torchmetrics' call on a CPU batch of 250 x 32 x 32, which made SSIM 3/4 of a training step.
    """
    kernel, sigma = ssim_window(target.shape[-2], target.shape[-1])
    c = target.shape[1]
    pad = (kernel - 1) // 2
    g = _gaussian_1d(kernel, sigma, recon.dtype, recon.device)
    stack = torch.cat([recon, target, recon * recon, target * target, recon * target], dim=1)
    if pad:
        stack = Fn.pad(stack, (pad, pad, pad, pad), mode="reflect")
    stack = Fn.conv2d(stack, g.view(1, 1, kernel, 1).expand(5 * c, 1, kernel, 1), groups=5 * c)
    stack = Fn.conv2d(stack, g.view(1, 1, 1, kernel).expand(5 * c, 1, 1, kernel), groups=5 * c)
    mu_x, mu_y, xx, yy, xy = stack.split(c, dim=1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


class ReconstructionLoss(nn.Module):
    """Eq. (3): ``alpha * (1 - SSIM) + gamma * Huber_delta``, means over the batch -> scalar.

    SSIM: gaussian window 11 x 11, sigma 1.5 (smaller for tiny images, :func:`hesig.metrics.ssim_window`),
    data range 1.0, averaged over the full map (:func:`differentiable_ssim`).
    """

    def __init__(self, ssim_weight: float = PAPER_LOSS["ssim_weight"], huber_weight: float = PAPER_LOSS["huber_weight"],
                 huber_delta: float = PAPER_LOSS["huber_delta"]):
        super().__init__()
        for name, value in (("ssim_weight", ssim_weight), ("huber_weight", huber_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidValueError(f"{name} must be finite and >= 0, got {value}")
        if not (math.isfinite(huber_delta) and huber_delta > 0):
            raise InvalidValueError(f"huber_delta must be > 0, got {huber_delta}")
        if ssim_weight == 0 and huber_weight == 0:
            raise InvalidValueError("ssim_weight and huber_weight are both 0: the reconstruction loss would be empty")
        self.ssim_weight, self.huber_weight, self.huber_delta = float(ssim_weight), float(huber_weight), float(huber_delta)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = recon.new_zeros(())
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1.0 - differentiable_ssim(recon, target))
        if self.huber_weight:
            loss = loss + self.huber_weight * Fn.huber_loss(recon, target, delta=self.huber_delta)
        return loss


@dataclass
class ViciousModel:
    """A trained pair. ``classifier`` F: [n, C, H, W] -> logits [n, N]; ``decoder`` G: released [n, N] -> images.

    ``decoder`` is None for an honest model (beta^R = 0).
    """

    classifier: nn.Module
    decoder: DCGANDecoder | None
    release: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The released vectors for ``images`` (the user's side) -> float32 [n, N]."""
        self.classifier.eval()
        device = next(self.classifier.parameters()).device
        parts = [release(self.classifier(images[i:i + batch_size].to(device)), self.release).cpu()
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0)

    @torch.inference_mode()
    def reconstruct(self, released: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The server's attack: images [n, C, H, W] in [0, 1] from released vectors [n, N] only."""
        if self.decoder is None:
            raise InvalidValueError("this is an honest model (beta^R = 0): it has no decoder to reconstruct with")
        if released.ndim != 2 or released.shape[1] != self.decoder.in_features:
            raise ShapeError(f"the decoder reads released vectors [n, {self.decoder.in_features}], got {list(released.shape)}")
        if not torch.isfinite(released).all():
            raise InvalidValueError("released outputs contain NaN or inf")
        self.decoder.eval()
        device = next(self.decoder.parameters()).device
        parts = [self.decoder(released[i:i + batch_size].to(device).float()).cpu() for i in range(0, len(released), batch_size)]
        return torch.cat(parts)


class ViciousAttack(Attack):
    """Algorithm 1. Parameters are validated here (scikit-learn style); :meth:`fit` trains (F, G)
    into ``model`` (a :class:`ViciousModel`), :meth:`reconstruct` decodes released vectors with G.

    Args:
        beta: ``"R/C"``, e.g. ``"3/1"`` for beta^R = 3, beta^C = 1 (or a ``(beta_R, beta_C)`` pair).
        release: ``"logits"`` or ``"softmax"`` -- what G reads.
        epochs, batch_size, lr: Algorithm 1's E, K and both Adams' learning rate.
        valid_fraction: share of the training images held out for model selection.
        ngf: G's width (:class:`DCGANDecoder`). F is always ``bn_cnn`` (see :mod:`hesig.models.architectures`).
        ssim_weight, huber_weight, huber_delta: alpha, gamma and delta of eq. (3).
        seed: weight init, validation split and batch order.
    """

    knowledge = LabelledData
    name = "vicious classifier"

    def __init__(self, beta: str | tuple[float, float] = "3/1", release: str = "logits", *,
                 epochs: int = PAPER_TRAINING["epochs"], batch_size: int = PAPER_TRAINING["batch_size"],
                 lr: float = PAPER_TRAINING["lr"], valid_fraction: float = PAPER_TRAINING["valid_fraction"],
                 ngf: int = VICIOUS_NGF,
                 ssim_weight: float = PAPER_LOSS["ssim_weight"], huber_weight: float = PAPER_LOSS["huber_weight"],
                 huber_delta: float = PAPER_LOSS["huber_delta"], seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = True):
        self.beta_r, self.beta_c = parse_beta(beta if isinstance(beta, str) else "/".join(str(b) for b in beta))
        if release not in RELEASES:
            raise InvalidValueError(f"unknown release '{release}' (choose from {', '.join(RELEASES)})")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("ngf", ngf)):
            if int(value) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {value}")
        if not (math.isfinite(lr) and lr > 0):
            raise InvalidValueError(f"lr must be > 0, got {lr}")
        if not 0 < valid_fraction < 1:
            raise InvalidValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
        self.release = release
        self.epochs, self.batch_size, self.lr, self.valid_fraction = int(epochs), int(batch_size), float(lr), float(valid_fraction)
        self.ngf, self.seed, self.device, self.progress = int(ngf), int(seed), torch.device(device), progress
        self.loss_r = ReconstructionLoss(ssim_weight, huber_weight, huber_delta)
        self.model: ViciousModel | None = None

    @property
    def beta(self) -> str:
        return f"{self.beta_r:g}/{self.beta_c:g}"

    def settings(self) -> dict[str, Any]:
        return {"beta": self.beta, "beta_r": self.beta_r, "beta_c": self.beta_c, "release": self.release,
                "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "valid_fraction": self.valid_fraction,
                "arch": "bn_cnn", "ngf": self.ngf, "ssim_weight": self.loss_r.ssim_weight,
                "huber_weight": self.loss_r.huber_weight, "huber_delta": self.loss_r.huber_delta, "seed": self.seed}

    def split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded (train, validation) index split of n training images."""
        n_valid = max(1, int(round(n * self.valid_fraction)))
        if n - n_valid < 1:
            raise InvalidValueError(f"{n} training images leave nothing to train on after the validation split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return order[n_valid:], order[:n_valid]

    def _losses(self, model: ViciousModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model.classifier(x)
        loss_c = Fn.cross_entropy(logits, y)
        if model.decoder is None:
            return loss_c, loss_c.new_zeros(()), logits
        loss_r = self.loss_r(model.decoder(release(logits, self.release)), x)
        return loss_c, loss_r, logits

    @torch.no_grad()
    def _validate(self, model: ViciousModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        model.classifier.eval()
        if model.decoder is not None:
            model.decoder.eval()
        total_c = total_r = correct = 0.0
        for start in range(0, len(x), 1000):
            xb, yb = x[start:start + 1000].to(self.device), y[start:start + 1000].to(self.device)
            loss_c, loss_r, logits = self._losses(model, xb, yb)
            total_c += float(loss_c) * len(xb)
            total_r += float(loss_r) * len(xb)
            correct += float((logits.argmax(1) == yb).sum())
        n = len(x)
        return {"valid_ce": total_c / n, "valid_rec": total_r / n, "valid_acc": correct / n,
                "valid_objective": (self.beta_c * total_c + self.beta_r * total_r) / n}

    def _fit(self, data: LabelledData) -> None:
        """Train F and G on ``data.images`` float32 [N, C, H, W] in [0, 1] with ``data.labels`` [N] -> ``model``."""
        # The training set and the shuffled order live on the training device: a host-to-device copy
        # per step would wait for the GPU's queue to drain every step.
        images, labels, num_classes = data.images.to(self.device), data.labels.to(self.device), data.num_classes
        train_idx, valid_idx = (idx.to(self.device) for idx in self.split(len(images)))
        torch.manual_seed(self.seed)
        classifier = build_model("bn_cnn", tuple(images.shape[1:]), num_classes)
        decoder = DCGANDecoder(num_classes, tuple(images.shape[1:]), self.ngf) if self.beta_r > 0 else None
        model = ViciousModel(classifier.to(self.device), decoder.to(self.device) if decoder is not None else None, self.release)
        networks = [model.classifier] + ([model.decoder] if model.decoder is not None else [])
        optimizers = [torch.optim.Adam(net.parameters(), lr=self.lr) for net in networks]  # one Adam each (F, G)
        gen = torch.Generator().manual_seed(self.seed + 1)
        x_valid, y_valid = images[valid_idx], labels[valid_idx]
        steps = len(train_idx) // self.batch_size or 1
        sum_c = sum_r = 0.0

        def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
            nonlocal sum_c, sum_r
            x, y = images[idx].to(self.device), labels[idx].to(self.device)
            loss_c, loss_r, _ = self._losses(model, x, y)
            sum_c = sum_c + loss_c.detach().double()  # summed on the device: no host sync per step
            sum_r = sum_r + loss_r.detach().double()
            # eq. (4); G's gradient is beta^R * dL^R/dG: L^C does not touch G
            return self.beta_c * loss_c + self.beta_r * loss_r

        best, best_state, start_time = math.inf, None, time.perf_counter()
        for epoch in train_epochs(optimizers, loss_of_batch, train_idx, batch_size=self.batch_size, epochs=self.epochs,
                                  generator=gen, modules=networks, drop_last=True,  # drop_last, as their loader does
                                  desc=f"vicious {self.beta} {self.release}", progress=self.progress):
            record = {"epoch": epoch.number, "train_ce": float(sum_c) / steps, "train_rec": float(sum_r) / steps,
                      **self._validate(model, x_valid, y_valid), "seconds": time.perf_counter() - start_time}
            sum_c = sum_r = 0.0
            if not math.isfinite(record["valid_objective"]):
                raise InvalidValueError(f"training diverged at epoch {epoch.number} "
                                        f"(validation objective {record['valid_objective']})")
            model.history.append(record)
            epoch.show(acc=f"{record['valid_acc']:.4f}", rec=f"{record['valid_rec']:.4f}")
            if record["valid_objective"] <= best:
                best, model.best_epoch = record["valid_objective"], epoch.number
                best_state = [copy.deepcopy(net.state_dict()) for net in networks]
        for net, state in zip(networks, best_state):
            net.load_state_dict(state)
            net.eval()
        model.train_seconds = time.perf_counter() - start_time
        self.model = model

    def _reconstruct(self, released: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, dict[str, Any]]:
        """G(y^): images [n, C, H, W] in [0, 1] from released vectors [n, N] only."""
        return self.model.reconstruct(released, batch_size), {"release": self.release, "best_epoch": self.model.best_epoch}


__all__ = ["ViciousAttack", "ViciousModel", "ReconstructionLoss", "parse_beta", "release", "resize_images",
           "differentiable_ssim", "RELEASES", "PAPER_LOSS", "PAPER_TRAINING", "TABLE1_LOGITS", "TABLE1_SOFTMAX"]
