"""Image-reconstruction metrics: PSNR, SSIM, class recovery and the two trivial baselines.

Conventions (all functions):

* images are floating-point tensors of shape ``[N, C, H, W]`` with values in ``[0, 1]``
  (a slack of ``1e-6`` is tolerated for rounding); anything else raises a one-line
  :class:`~hesig.core.errors.ShapeError` / :class:`~hesig.core.errors.InvalidValueError`;
* the data range is **always 1.0** -- it is never inferred from the batch, so a metric on
  a dim image is not silently re-normalised;
* per-image metrics return a float32 tensor ``[N]`` on the input's device;
* ``ssim`` is the papers' SSIM (mean over the map's interior, as scikit-image / piq compute it);
  ``ssim_full_map`` (torchmetrics' mean over the whole reflect-padded map) is reported beside it.

This module sits at the bottom of the layer stack: from hesig it imports only :mod:`hesig.core.errors`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

try:  # torchmetrics >= 1.0
    from torchmetrics.functional.image import structural_similarity_index_measure as _tm_ssim
except ImportError:  # pragma: no cover - older layout
    from torchmetrics.functional import structural_similarity_index_measure as _tm_ssim

from ..core.errors import InvalidValueError, ShapeError

#: The data range every metric uses (images live in [0, 1]).
DATA_RANGE = 1.0
#: PSNR's MSE floor: identical images give 10*log10(1/1e-10) = 100 dB instead of +inf.
MSE_FLOOR = 1e-10
#: SSIM window for images at least this large on both sides (Wang et al. 2004).
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
#: Images per SSIM chunk; bounds peak memory (torchmetrics builds 5 padded copies of each chunk).
SSIM_CHUNK = 2048
#: Tolerance for values slightly outside [0, 1] (float rounding in decoders).
RANGE_SLACK = 1e-6


# --------------------------------------------------------------------------------------------
# validation


def check_images(x: Any, name: str = "images") -> torch.Tensor:
    """Validate an image batch and return it unchanged.

    Raises :class:`ShapeError` unless ``x`` is a non-empty 4-D tensor ``[N, C, H, W]``, and
    :class:`InvalidValueError` for a non-floating dtype, NaN/inf, or values outside
    ``[-1e-6, 1 + 1e-6]``. Messages are one line and name the argument (``name``).
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{name} must have shape [N, C, H, W], got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError(f"{name} is empty (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise InvalidValueError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise InvalidValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.detach().min()), float(x.detach().max())
    if lo < -RANGE_SLACK or hi > 1.0 + RANGE_SLACK:
        raise InvalidValueError(f"{name} must lie in [0, 1] (data range 1.0), got values in [{lo:.4g}, {hi:.4g}]")
    return x


def _check_pair(recon: torch.Tensor, target: torch.Tensor) -> None:
    check_images(recon, "recon")
    check_images(target, "target")
    if recon.shape != target.shape:
        raise ShapeError(f"recon has shape {tuple(recon.shape)} but target has shape {tuple(target.shape)}")


def _as_labels(labels: Any, n: int, name: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ShapeError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InvalidValueError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    return labels.long()


# --------------------------------------------------------------------------------------------
# per-image metrics


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB, data range 1.

    ``PSNR_i = 10 * log10(1 / max(MSE_i, 1e-10))`` with ``MSE_i`` the mean squared error over
    all ``C*H*W`` values of image ``i``. The MSE floor caps identical images at 100 dB (instead
    of +inf), so means and standard deviations stay finite.

    Args: ``recon``, ``target``: ``[N, C, H, W]`` in ``[0, 1]``, same shape.
    Returns: float32 tensor ``[N]`` (dB) on the input's device.
    """
    _check_pair(recon, target)
    diff = recon.detach().double() - target.detach().to(recon.device).double()
    mse = diff.pow(2).flatten(1).mean(1).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(DATA_RANGE**2 / mse)).float()


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """Gaussian SSIM window ``(kernel_size, sigma)`` used for ``height x width`` images.

    The standard window is 11 x 11 with sigma 1.5. For images smaller than 11 pixels on a side
    (e.g. the 8 x 8 sklearn digits) the window is the largest odd size ``k <= min(H, W)`` and
    sigma is scaled with it, ``sigma = 1.5 * k / 11`` (8 x 8 -> k = 7, sigma ~ 0.955), keeping
    the window-to-sigma ratio of the standard setting. torchmetrics derives the gaussian
    kernel size from sigma as ``2 * int(3.5 * sigma + 0.5) + 1``, which equals ``k`` for every
    ``k <= 11`` with this scaling.
    """
    side = min(int(height), int(width))
    if side < 1:
        raise ShapeError(f"images must be at least 1 x 1 for SSIM, got {height} x {width}")
    if side >= SSIM_KERNEL_SIZE:
        return SSIM_KERNEL_SIZE, SSIM_SIGMA
    k = side if side % 2 == 1 else side - 1
    return k, SSIM_SIGMA * k / SSIM_KERNEL_SIZE


def _ssim_means(recon: torch.Tensor, target: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM ``(interior mean, full-map mean)``, two float32 tensors ``[N]``, from one SSIM map.

    The map is torchmetrics' (reflect padding by the window radius, so it is ``H x W``); its
    interior -- the pixels at least ``(k-1)/2`` from every edge, where the window never reads
    padding -- is exactly what a "valid" convolution (scikit-image, piq) produces.
    """
    _check_pair(recon, target)
    if int(chunk_size) < 1:
        raise InvalidValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
    kernel, sigma = ssim_window(recon.shape[-2], recon.shape[-1])
    recon = recon.detach().float()
    target = target.detach().to(recon.device).float()
    interior, full = [], []
    for start in range(0, recon.shape[0], chunk_size):
        inner, full_mean = _ssim_of_batch(recon[start:start + chunk_size], target[start:start + chunk_size], kernel, sigma)
        interior.append(inner.float())
        full.append(full_mean.float())
    return torch.cat(interior), torch.cat(full)


def _ssim_of_batch(recon: torch.Tensor, target: torch.Tensor, kernel: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(interior mean, full-map mean) [N] of one batch's SSIM maps; differentiable in ``recon``."""
    pad = (kernel - 1) // 2
    full_mean, ssim_map = _tm_ssim(recon, target, gaussian_kernel=True, sigma=sigma, kernel_size=kernel,
                                   data_range=DATA_RANGE, reduction="none", return_full_image=True)
    inner = ssim_map[..., pad:ssim_map.shape[-2] - pad, pad:ssim_map.shape[-1] - pad] if pad else ssim_map
    return inner.flatten(1).mean(1), full_mean.reshape(-1)


def ssim_for_training(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image interior SSIM [N] of one batch, with gradients: :func:`ssim`'s computation (same
    window, constants, data range) without detaching, for losses such as 1 - SSIM."""
    _check_pair(recon, target)
    kernel, sigma = ssim_window(recon.shape[-2], recon.shape[-1])
    return _ssim_of_batch(recon, target, kernel, sigma)[0]


def ssim(recon: torch.Tensor, target: torch.Tensor, chunk_size: int = SSIM_CHUNK) -> torch.Tensor:
    """Per-image structural similarity (SSIM) as the papers score it: the mean of the SSIM map's interior.

    ``SSIM(x, y) = mean over interior pixels p of
    ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))``
    with local gaussian-weighted statistics (population covariance), ``C1 = (0.01 * 1)^2``,
    ``C2 = (0.03 * 1)^2``, data range 1.0, window from :func:`ssim_window` (11 x 11, sigma 1.5;
    smaller for images under 11 pixels a side). For multi-channel images the per-channel maps
    are averaged too.

    **Interior convention** (Wang et al. 2004's reference code, ``skimage.metrics.structural_similarity``,
    piq -- what the seed papers' code uses): only pixels whose window lies inside the image count,
    i.e. a ``(k-1)/2``-pixel border is dropped (28 x 28 -> the central 18 x 18; 32 x 32 -> 22 x 22;
    8 x 8 with its 7 x 7 window -> 2 x 2). Matches scikit-image to 1e-4 (tests/test_metrics.py).
    :func:`ssim_full_map` is the other convention, reported beside it: it also scores the border,
    which rewards an exactly black background and so flatters the class-mean and mean-image
    baselines (by 0.18 and 0.22 on the MNIST test split, results/TABLE.md) more than a decoder's output.

    Args: ``recon``, ``target``: ``[N, C, H, W]`` in ``[0, 1]``, same shape; ``chunk_size``:
    images per torchmetrics call (bounds memory).
    Returns: float32 tensor ``[N]`` (unitless, <= 1) on the input's device.
    """
    return _ssim_means(recon, target, chunk_size)[0]


def ssim_full_map(recon: torch.Tensor, target: torch.Tensor, chunk_size: int = SSIM_CHUNK) -> torch.Tensor:
    """Per-image SSIM averaged over the **full** ``H x W`` map (torchmetrics' default) -> float32 ``[N]``.

    Same window, constants and data range as :func:`ssim`, but torchmetrics reflect-pads the image
    by the window radius and averages the map over every pixel, border included (59 % of a 28 x 28
    image). Reported beside :func:`ssim` under the name ``ssim_full_map``, never instead of it.
    """
    return _ssim_means(recon, target, chunk_size)[1]


# --------------------------------------------------------------------------------------------
# class recovery and baselines


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def class_recovery(classifier: nn.Module, recon: torch.Tensor, labels: Any, batch_size: int = 1024) -> float:
    """Fraction (0..1) of reconstructions that ``classifier`` assigns to their true label.

    ``recon``: ``[N, C, H, W]`` in ``[0, 1]``; ``labels``: ``[N]`` integer class indices.
    The classifier runs in eval mode under ``torch.no_grad`` on its own device (that of its
    first parameter or buffer, else CPU), ``batch_size`` images at a time; its prediction is
    the argmax of its ``[B, num_classes]`` output. Its previous train/eval mode is restored.
    """
    check_images(recon, "recon")
    labels = _as_labels(labels, recon.shape[0])
    if int(batch_size) < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    device = _module_device(classifier)
    was_training = classifier.training
    classifier.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, recon.shape[0], batch_size):
                logits = classifier(recon[start:start + batch_size].detach().float().to(device))
                if logits.ndim != 2 or logits.shape[0] != min(batch_size, recon.shape[0] - start):
                    raise ShapeError(f"classifier output has shape {tuple(logits.shape)}, expected [batch, num_classes]")
                pred = logits.argmax(1).cpu()
                correct += int((pred == labels[start:start + batch_size].cpu()).sum())
    finally:
        classifier.train(was_training)
    return correct / recon.shape[0]


def mean_image_baseline(train_images: torch.Tensor, n: int) -> torch.Tensor:
    """The mean training image repeated ``n`` times: ``[n, C, H, W]`` (float32).

    What an attacker who knows only the data distribution would output; its PSNR/SSIM
    against the true inputs is the floor a real attack has to beat.
    """
    check_images(train_images, "train_images")
    if int(n) != n or n < 0:
        raise InvalidValueError(f"n must be a non-negative integer, got {n}")
    mean = train_images.detach().double().mean(0, keepdim=True).float()
    return mean.expand(int(n), *mean.shape[1:]).clone()


def class_mean_baseline(train_images: torch.Tensor, train_labels: Any, labels: Any) -> torch.Tensor:
    """Per-class mean training image for each label: ``[len(labels), C, H, W]`` (float32).

    Row ``i`` is ``mean{train_images[j] : train_labels[j] == labels[i]}`` -- what an attacker
    who learned only the class of each input (e.g. from the label oracle) would draw.
    Raises :class:`InvalidValueError` if a requested class has no training image.
    """
    check_images(train_images, "train_images")
    train_labels = _as_labels(train_labels, train_images.shape[0], "train_labels").to(train_images.device)
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ShapeError(f"labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    labels = _as_labels(labels, labels.shape[0]).to(train_images.device)
    if bool((train_labels < 0).any()) or (labels.numel() and bool((labels < 0).any())):
        raise InvalidValueError("class labels must be non-negative")
    num_classes = int(max(int(train_labels.max()), int(labels.max()) if labels.numel() else 0)) + 1
    sums = torch.zeros((num_classes, *train_images.shape[1:]), dtype=torch.float64, device=train_images.device)
    sums.index_add_(0, train_labels, train_images.detach().double())
    counts = torch.bincount(train_labels, minlength=num_classes)
    missing = sorted({int(c) for c in labels.unique() if counts[c] == 0})
    if missing:
        raise InvalidValueError(f"no training images of class {missing[0]}" + (
            f" (and {len(missing) - 1} more classes)" if len(missing) > 1 else ""))
    means = sums / counts.clamp_min(1).double().view(-1, *([1] * (sums.ndim - 1)))
    return means[labels].float()


#: He et al.'s SSIM: scikit-image's ``compare_ssim`` defaults, as their code calls it.
HE_SSIM_WINDOW = 7


def ssim_own_range(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image exactly as He et al. (ACSAC 2019) scored it -> float32 ``[N]``.

    Not hesig's metric: their code (``inverse_whitebox_*_defense.py``) calls scikit-image's
    ``compare_ssim(ref, inv, data_range=inv.max() - inv.min())`` with its defaults: a **7 x 7
    uniform** window (not gaussian), the **sample** covariance (``N / (N - 1)``, N = 49), the
    **reconstruction's own range** as data range, the mean over the map's **interior** (a 3-pixel
    border dropped), channels averaged. So results can be set against their tables cell by cell;
    tests/test_split_inference.py checks it against scikit-image. A constant reconstruction
    (range 0) uses data range 1.0. Images need at least 7 pixels a side.
    """
    _check_pair(recon, target)
    k = HE_SSIM_WINDOW
    if min(target.shape[-2:]) < k:
        raise ShapeError(f"He et al.'s SSIM needs images of at least {k} x {k}, got {tuple(target.shape[-2:])}")
    x = recon.detach().double()
    y = target.detach().to(x.device).double()
    span = (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    span = torch.where(span > 0, span, torch.full_like(span, DATA_RANGE)).view(-1, 1, 1, 1)
    c = x.shape[1]
    window = torch.full((5 * c, 1, k, k), 1.0 / (k * k), dtype=x.dtype, device=x.device)
    # A "valid" convolution is scikit-image's reflect-filtered map with the border cropped.
    moments = torch.nn.functional.conv2d(torch.cat([x, y, x * x, y * y, x * y], 1), window, groups=5 * c)
    ux, uy, uxx, uyy, uxy = moments.split(c, dim=1)
    cov_norm = k * k / (k * k - 1.0)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s_map.flatten(1).mean(1).float()


def dataset_psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB from **one** MSE over the whole set, ``10 log10(1 / mean_all (x~ - x)^2)``.

    The convention of Malekzadeh & Gunduz's code (their Table 1). It is not the mean of the
    per-image :func:`psnr`: by Jensen's inequality it is lower, because badly reconstructed
    images dominate a pooled MSE. Reported next to the per-image mean, never instead of it.
    """
    _check_pair(recon, target)
    mse = (recon.detach().double() - target.detach().to(recon.device).double()).pow(2).mean().clamp_min(MSE_FLOOR)
    return float(10.0 * torch.log10(DATA_RANGE**2 / mse))


# --------------------------------------------------------------------------------------------
# summaries


def summarize(recon: torch.Tensor, target: torch.Tensor) -> dict[str, float | int]:
    """Mean and standard deviation of per-image PSNR (dB) and SSIM over the batch.

    Returns ``{"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "ssim_full_map_mean",
    "ssim_full_map_std", "n"}`` as Python floats (``n`` an int): ``ssim_*`` is the interior
    convention of :func:`ssim` (the papers'), ``ssim_full_map_*`` that of :func:`ssim_full_map`.
    The std is the sample standard deviation (``N - 1`` in the denominator), 0.0 for a single image.
    """
    p = psnr(recon, target).double()
    interior, full = (v.double() for v in _ssim_means(recon, target, SSIM_CHUNK))
    n = int(p.shape[0])

    def _std(v: torch.Tensor) -> float:
        return float(v.std(correction=1)) if n > 1 else 0.0

    return {"psnr_mean": float(p.mean()), "psnr_std": _std(p), "ssim_mean": float(interior.mean()),
            "ssim_std": _std(interior), "ssim_full_map_mean": float(full.mean()), "ssim_full_map_std": _std(full), "n": n}


def ssim_convention(height: int, width: int) -> dict[str, Any]:
    """How SSIM is computed for ``height x width`` images, for metrics files: a JSON-serialisable dict.

    ``{"kernel_size", "sigma", "data_range", "ssim": ..., "ssim_full_map": ..., "small_images": ...}``
    -- the window actually used and one sentence per convention, so a reader of a metrics file
    never has to guess which SSIM a number is.
    """
    kernel, sigma = ssim_window(height, width)
    pad = (kernel - 1) // 2
    return {"kernel_size": kernel, "sigma": sigma, "data_range": DATA_RANGE,
            "ssim": f"interior mean (scikit-image / piq): the central {height - 2 * pad} x {width - 2 * pad} "
                    f"pixels of the {height} x {width} map, where the gaussian window lies inside the image",
            "ssim_full_map": "mean over the full map, reflect-padded by the window radius (torchmetrics' default)",
            "small_images": f"window {SSIM_KERNEL_SIZE} x {SSIM_KERNEL_SIZE}, sigma {SSIM_SIGMA} when both sides are "
                            f">= {SSIM_KERNEL_SIZE} pixels; otherwise the largest odd k <= the shorter side and "
                            f"sigma = {SSIM_SIGMA} * k / {SSIM_KERNEL_SIZE} (8 x 8 -> 7 x 7, sigma 0.955)"}


def reconstruction_report(recon: torch.Tensor, target: torch.Tensor, labels: Any, train_images: torch.Tensor,
                          train_labels: Any, classifier: nn.Module | None = None) -> dict[str, Any]:
    """Attack metrics next to the mean-image and class-mean baselines.

    Args:
        recon, target: ``[N, C, H, W]`` in ``[0, 1]`` -- reconstructions and the secret inputs.
        labels: ``[N]`` true classes of ``target``.
        train_images, train_labels: ``[M, C, H, W]`` / ``[M]`` data the baselines are built from.
        classifier: optional evaluator; when given every row gets ``class_recovery`` (its
            accuracy on that row's images against ``labels``), else ``class_recovery`` is None.
            For the class-mean baseline this is the classifier's accuracy on class means, a
            ceiling check for what "knowing only the class" buys.

    Returns a JSON-serialisable dict::

        {"data_range": 1.0,
         "ssim": ssim_convention(H, W),
         "attack":              {psnr_mean, psnr_std, ssim_mean, ssim_std, ssim_full_map_mean,
                                 ssim_full_map_std, n, class_recovery},
         "baseline_mean_image": {... same keys ...},
         "baseline_class_mean": {... same keys ...}}
    """
    _check_pair(recon, target)
    labels = _as_labels(labels, target.shape[0])
    check_images(train_images, "train_images")
    if train_images.shape[1:] != target.shape[1:]:
        raise ShapeError(f"train_images have images of shape {tuple(train_images.shape[1:])} "
                         f"but target has {tuple(target.shape[1:])}")
    n = target.shape[0]
    target = target.detach()
    rows = {
        "attack": recon.detach(),
        "baseline_mean_image": mean_image_baseline(train_images, n).to(target.device),
        "baseline_class_mean": class_mean_baseline(train_images, train_labels, labels).to(target.device),
    }
    report: dict[str, Any] = {"data_range": DATA_RANGE, "ssim": ssim_convention(target.shape[-2], target.shape[-1])}
    for key, images in rows.items():
        row: dict[str, Any] = dict(summarize(images, target))
        row["class_recovery"] = None if classifier is None else class_recovery(classifier, images, labels)
        report[key] = row
    return report


__all__ = [
    "DATA_RANGE", "MSE_FLOOR", "check_images", "psnr", "ssim_window", "ssim", "class_recovery",
    "mean_image_baseline", "class_mean_baseline", "summarize", "reconstruction_report", "ssim_own_range",
    "ssim_full_map", "dataset_psnr", "ssim_convention",
]
