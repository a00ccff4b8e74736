"""Training the fingerprint decoder on (E_x, x) pairs: L2 loss (Moran & Juvekar, section 4), or a
loss that fits the SSIM metric (``loss="ssim-l1"``, see :data:`hesig.core.defaults.DECODER_LOSSES`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ...core.defaults import DECODER_LOSSES, SSIM_L1_ALPHA
from ...core.errors import InvalidValueError, ShapeError
from ...evaluation.metrics import ssim_for_training
from ...models.dcgan import NGF, DCGANDecoder
from ...models.training import train_epochs


@dataclass
class DecoderTrainingReport:
    """train_mse: the training objective per epoch (MSE, or the ssim-l1 loss); val_mse: validation
    MSE per epoch, whatever the loss; the best epoch is chosen by the validation objective."""
    epochs_run: int
    best_epoch: int
    best_val_mse: float
    train_mse: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    loss: str = "mse"


def train_decoder(features: torch.Tensor, images: torch.Tensor, *, ngf: int = NGF, epochs: int = 40,
                  batch_size: int = 128, lr: float = 2e-3, val_fraction: float = 0.1, patience: int = 5,
                  seed: int = 0, device: str | torch.device = "cpu", progress: bool = True, loss: str = "mse",
                  mlp: int = 0, res: int = 0) -> tuple[DCGANDecoder, DecoderTrainingReport]:
    """Fit a :class:`DCGANDecoder` from features [n, F] to images [n, C, H, W] in [0, 1].

    loss: "mse" (the paper's), or "ssim-l1" = 0.84·(1 - SSIM) + 0.16·L1 per image, SSIM interior
    as :func:`hesig.evaluation.metrics.ssim` scores it. A seeded ``val_fraction`` of the rows is
    held out; training stops after ``patience`` epochs without improvement of the validation
    objective and the best-validation weights are returned. mlp: hidden fully connected layers
    before the projection, res: residual blocks at full resolution before the output convolution
    (:class:`~hesig.models.dcgan.DCGANDecoder`; 0 and 0: the paper's generator).
    """
    if loss not in DECODER_LOSSES:
        raise InvalidValueError(f"decoder loss must be one of {', '.join(DECODER_LOSSES)}, got {loss!r}")
    if features.shape[0] != images.shape[0]:
        raise ShapeError(f"{features.shape[0]} fingerprints but {images.shape[0]} images")
    if not 0 < val_fraction < 1:
        raise InvalidValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not torch.isfinite(features).all():
        raise InvalidValueError("decoder inputs contain NaN or infinity")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = features.shape[0]
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(n * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    model = DCGANDecoder(features.shape[1], tuple(images.shape[1:]), ngf=ngf, mlp=mlp, res=res).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.MSELoss() if loss == "mse" else _ssim_l1
    report = DecoderTrainingReport(0, 0, math.inf, loss=loss)
    best_objective = math.inf
    best_state = copy.deepcopy(model.state_dict())
    # Rows and the shuffled order live on the training device: a host-to-device copy per step would
    # wait for the GPU's queue to drain every step.
    features_on, images_on = features.to(device), images.to(device)
    train_on, val_on = train_idx.to(device), val_idx.to(device)

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(features_on[idx]), images_on[idx])

    for epoch in train_epochs([opt], loss_of_batch, train_on, batch_size=batch_size, epochs=epochs, generator=gen,
                              modules=[model], schedulers=[sched], min_batch=2,  # BatchNorm needs two samples
                              desc="train-decoder", progress=progress):
        report.train_mse.append(epoch.mean_loss)
        val_mse, objective = _validate(model, features_on[val_on], images_on[val_on], loss_fn)
        report.val_mse.append(val_mse)
        report.epochs_run = epoch.number
        if objective < best_objective:
            best_objective, report.best_val_mse, report.best_epoch = objective, val_mse, epoch.number
            best_state = copy.deepcopy(model.state_dict())
        epoch.show(train=f"{report.train_mse[-1]:.4f}", val=f"{report.val_mse[-1]:.4f}")
        if epoch.number - report.best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return model.eval(), report


def _ssim_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.84·(1 - SSIM) + 0.16·L1, averaged over the batch (Zhao et al. 2017's mix, SSIM as scored)."""
    l1 = (recon - target).abs().flatten(1).mean(1)
    return (SSIM_L1_ALPHA * (1 - ssim_for_training(recon, target)) + (1 - SSIM_L1_ALPHA) * l1).mean()


@torch.inference_mode()
def _validate(model: nn.Module, features: torch.Tensor, images: torch.Tensor, loss_fn, batch_size: int = 2048
              ) -> tuple[float, float]:
    """(MSE, the training objective) over the validation rows, batch-size weighted."""
    model.eval()
    mse = objective = 0.0
    for start in range(0, len(features), batch_size):
        recon, target = model(features[start:start + batch_size]), images[start:start + batch_size]
        mse += ((recon - target) ** 2).mean().item() * len(recon)
        objective += float(loss_fn(recon, target)) * len(recon)
    return mse / len(features), objective / len(features)


@torch.inference_mode()
def decode(model: nn.Module, features: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Reconstructions float32 [n, C, H, W] in [0, 1] (CPU) from features [n, F]."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(features[s:s + batch_size].to(device)).cpu() for s in range(0, len(features), batch_size)])
