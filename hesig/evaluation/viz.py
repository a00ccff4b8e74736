"""Figures: reconstruction grids, ε-signatures, the label-change confidence curve, direction sets and
quality against queries.

Figures are built on :class:`matplotlib.figure.Figure` objects with an Agg canvas (no pyplot,
no global state, works headless) and written through :func:`save_figure`, which renders the PNG
in memory and writes it with :func:`hesig.io.atomic_write_bytes` (an unwritable path raises
:class:`hesig.core.errors.OutputError`). Images are ``[N, C, H, W]`` tensors in ``[0, 1]``; 1-channel
images are drawn in gray with ``vmin=0, vmax=1`` (no per-image contrast stretch), 3-channel
images as RGB.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..core.errors import InvalidValueError, ShapeError
from ..core.io import atomic_write_bytes
from .metrics import check_images

#: Resolution of every saved figure.
DPI = 150
#: Size of one image cell in a grid, inches.
CELL_INCHES = 1.1


def new_figure(width: float, height: float) -> Figure:
    """A fresh figure (inches) with its own Agg canvas; nothing is registered with pyplot."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` as PNG (dpi 150, tight bounding box) and write it atomically to ``path``.

    The output is always PNG whatever the suffix; parent directories are created. Returns the path.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# image grids


def _to_display(img: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
    """[C,H,W] tensor -> (array, imshow kwargs): gray HxW for C=1, HxWx3 RGB for C=3."""
    arr = img.detach().cpu().float().clamp(0.0, 1.0).numpy()
    if arr.shape[0] == 1:
        return arr[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.transpose(arr, (1, 2, 0)), {}


def _blank(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def reconstruction_grid(rows: Sequence[torch.Tensor], row_labels: Sequence[str], path: str | os.PathLike,
                        title: str, col_labels: Sequence[str] | None = None) -> Path:
    """Grid of images, one labelled row per tensor (the paper's Figure 2 layout).

    Args:
        rows: list of ``[n_r, C, H, W]`` tensors in ``[0, 1]``, ``C`` in {1, 3} and the same for
            every row; conventionally the originals first, then the reconstruction(s) and any
            comparison rows (e.g. "plaintext ε", "CKKS ε", baselines). Column ``j`` of every row
            should show the same input; rows may be shorter (missing cells stay empty).
        row_labels: one label per row, written on the left.
        path: PNG output path.
        title: figure title.
        col_labels: optional labels above the columns (e.g. true classes), one per column.
    Returns the written path.
    """
    rows = list(rows)
    row_labels = [str(label) for label in row_labels]
    if not rows:
        raise ShapeError("reconstruction_grid needs at least one row")
    if len(row_labels) != len(rows):
        raise ShapeError(f"got {len(rows)} rows but {len(row_labels)} row labels")
    for label, images in zip(row_labels, rows):
        check_images(images, f"row {label!r}")
    channels = {int(images.shape[1]) for images in rows}
    if len(channels) != 1 or next(iter(channels)) not in (1, 3):
        raise ShapeError(f"grid images must all have 1 or 3 channels, got channel counts {sorted(channels)}")
    ncols = max(int(images.shape[0]) for images in rows)
    if col_labels is not None:
        col_labels = [str(label) for label in col_labels]
        if len(col_labels) != ncols:
            raise ShapeError(f"got {len(col_labels)} column labels for {ncols} columns")

    nrows = len(rows)
    header = 0.45 + (0.2 if col_labels is not None else 0.0)  # inches above the grid for the title(s)
    height = header + 0.1 + CELL_INCHES * nrows
    width = 1.2 + 0.05 + CELL_INCHES * ncols  # 1.2 inches on the left for the row labels
    fig = new_figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, (label, images) in enumerate(zip(row_labels, rows)):
        for c in range(ncols):
            ax = axes[r][c]
            _blank(ax)
            if c < images.shape[0]:
                arr, kwargs = _to_display(images[c])
                ax.imshow(arr, interpolation="nearest", **kwargs)
            else:
                ax.set_visible(False)
            if r == 0 and col_labels is not None:
                ax.set_title(col_labels[c], fontsize=9)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
    fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.08, top=1.0 - header / height, bottom=0.1 / height,
                        left=1.2 / width, right=1.0 - 0.05 / width)
    return save_figure(fig, path)


def class_grid(originals: torch.Tensor, recons: torch.Tensor, path: str | os.PathLike, title: str,
               max_cols: int = 10, recon_label: str = "reconstruction", class_mean: torch.Tensor | None = None,
               class_mean_label: str = "class mean") -> Path:
    """Many samples of one class, originals above their reconstructions (the paper's Figure 3).

    ``originals``, ``recons``: ``[n, C, H, W]`` in ``[0, 1]``, same shape. More than
    ``max_cols`` samples wrap into further original/reconstruction row pairs.
    ``class_mean``: optional ``[C, H, W]`` (or ``[1, C, H, W]``) image drawn under every pair in
    each column, so a reader can judge whether the reconstructions carry more than the class.
    Returns the written path.
    """
    check_images(originals, "originals")
    check_images(recons, "recons")
    if originals.shape != recons.shape:
        raise ShapeError(f"originals have shape {tuple(originals.shape)} but recons have {tuple(recons.shape)}")
    if int(max_cols) < 1:
        raise InvalidValueError(f"max_cols must be >= 1, got {max_cols}")
    max_cols = int(max_cols)
    if class_mean is not None:
        class_mean = torch.as_tensor(class_mean).reshape(1, *originals.shape[1:])
        check_images(class_mean, "class_mean")
    rows, labels = [], []
    for start in range(0, originals.shape[0], max_cols):
        rows += [originals[start:start + max_cols], recons[start:start + max_cols]]
        labels += ["original", recon_label]
        if class_mean is not None:
            rows.append(class_mean.expand(rows[-1].shape[0], *class_mean.shape[1:]))
            labels.append(class_mean_label)
    return reconstruction_grid(rows, labels, path, title)


# --------------------------------------------------------------------------------------------
# line plots


def _label_text(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, (np.generic,)):
        value = value.item()
    return f"class {value}" if isinstance(value, int) else str(value)


def signature_plot(eps: torch.Tensor, censored: torch.Tensor, labels: Any, path: str | os.PathLike,
                   title: str, eps_max: float | None = None) -> Path:
    """ε-signatures of a few inputs, one line per input.

    Args:
        eps: ``[n, k]`` label-change distance ε of input ``i`` along direction ``j``.
        censored: ``[n, k]`` bool, True where no flip was found in (0, ε_max] (hesig stores +inf
            there); those points are drawn at ``eps_max`` (when given) and marked with an ``x``.
        labels: ``[n]`` class (or any label) of each input; lines share a colour per label and
            the legend has one entry per label.
        path, title: PNG output path and figure title.
    x axis: direction index ``j``; y axis: ε on a log scale (non-positive or non-finite ε are
    not drawn). Returns the written path.
    """
    eps = torch.as_tensor(eps).detach().cpu().double()
    censored = torch.as_tensor(censored).detach().cpu().bool()
    if eps.ndim != 2:
        raise ShapeError(f"eps must have shape [n, k], got {tuple(eps.shape)}")
    if censored.shape != eps.shape:
        raise ShapeError(f"censored has shape {tuple(censored.shape)} but eps has {tuple(eps.shape)}")
    if eps_max is not None:
        eps = torch.where(censored, torch.full_like(eps, float(eps_max)), eps)
    label_list = list(labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else labels)
    if len(label_list) != eps.shape[0]:
        raise ShapeError(f"got {len(label_list)} labels for {eps.shape[0]} signatures")
    valid = torch.isfinite(eps) & (eps > 0)
    if not bool(valid.any()):
        raise InvalidValueError("eps has no positive finite values to plot on a log scale")

    palette = [f"C{i}" for i in range(10)]
    colours: dict[str, str] = {}
    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(eps.shape[1])
    for i, label in enumerate(label_list):
        text = _label_text(label)
        colour = colours.setdefault(text, palette[len(colours) % len(palette)])
        y = np.where(valid[i].numpy(), eps[i].numpy(), np.nan)
        ax.plot(x, y, "-o", color=colour, markersize=3, linewidth=1.2, alpha=0.85)
        mask = (censored[i] & valid[i]).numpy()
        if mask.any():
            ax.plot(x[mask], y[mask], "x", color=colour, markersize=8, markeredgewidth=1.8)
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=t) for t, c in colours.items()]
    if bool((censored & valid).any()):
        handles.append(Line2D([], [], color="black", marker="x", linestyle="none", markersize=8,
                              label="censored: no flip ≤ ε_max"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_yscale("log")
    ax.set_xlabel("direction index j")
    ax.set_ylabel("label-change distance ε (log scale)")
    ax.set_title(title)
    if eps.shape[1] <= 20:
        ax.set_xticks(x)
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


def signature_panels(eps: torch.Tensor, censored: torch.Tensor, labels: Any, images: torch.Tensor,
                     path: str | os.PathLike, title: str, eps_max: float, reference: torch.Tensor | None = None,
                     reference_label: str = "median over all test inputs") -> Path:
    """ε-signatures as small multiples: one panel per input, its image beside it.

    Args:
        eps, censored: ``[n, k]`` label-change distances and censoring mask (censored ε are drawn at
            ``eps_max`` as ``x``).
        labels: ``[n]`` class of each input (panel titles).
        images: ``[n, C, H, W]`` the inputs, drawn as thumbnails (the figure is for the analyst,
            who fingerprinted its own held-out test images).
        reference: optional ``[k]`` line drawn grey in every panel (e.g. the per-direction median
            over the test split), so each input's deviations can be read.
    Every panel shares the y range, so panels compare directly. Returns the written path.
    """
    eps = torch.as_tensor(eps).detach().cpu().double()
    censored = torch.as_tensor(censored).detach().cpu().bool()
    if eps.ndim != 2 or censored.shape != eps.shape:
        raise ShapeError(f"eps and censored must both be [n, k], got {tuple(eps.shape)} and {tuple(censored.shape)}")
    label_list = list(labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else labels)
    n, k = eps.shape
    if len(label_list) != n or images.shape[0] != n or n == 0:
        raise ShapeError(f"got {n} signatures, {len(label_list)} labels and {images.shape[0]} images")
    check_images(images, "images")
    eps = torch.where(censored, torch.full_like(eps, float(eps_max)), eps)
    finite = eps[torch.isfinite(eps) & (eps > 0)]
    if finite.numel() == 0:
        raise InvalidValueError("eps has no positive finite values to plot on a log scale")
    lo, hi = float(finite.min()) / 1.3, float(eps_max) * 1.3
    height = 1.9 * n + 0.6
    fig = new_figure(8.0, height)
    grid = fig.add_gridspec(n, 2, width_ratios=[1.0, 7.0], wspace=0.3, hspace=0.5, top=1.0 - 0.55 / height,
                            bottom=0.55 / height)
    x = np.arange(k)
    for i in range(n):
        thumb = fig.add_subplot(grid[i, 0])
        _blank(thumb)
        arr, kwargs = _to_display(images[i])
        thumb.imshow(arr, interpolation="nearest", **kwargs)
        thumb.set_title(f"input {i + 1}\n{_label_text(label_list[i])}", fontsize=8)
        ax = fig.add_subplot(grid[i, 1])
        if reference is not None:
            ax.plot(x, torch.as_tensor(reference).double().numpy(), color="0.6", linewidth=1.0)
        y = eps[i].numpy()
        ok = ~censored[i].numpy()
        ax.plot(x[ok], y[ok], "o", color="C0", markersize=2.5)
        if (~ok).any():
            ax.plot(x[~ok], y[~ok], "x", color="C3", markersize=5, markeredgewidth=1.3)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_xlim(-1, k)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=7)
        if i == n - 1:
            ax.set_xlabel("direction index j", fontsize=8)
        ax.set_ylabel("ε (log)", fontsize=8)
    handles = [Line2D([], [], color="C0", marker="o", linestyle="none", markersize=3, label="ε_j: first label change"),
               Line2D([], [], color="C3", marker="x", linestyle="none", markersize=5,
                      label=f"censored: no change up to ε_max = {eps_max:g}")]
    if reference is not None:
        handles.append(Line2D([], [], color="0.6", label=reference_label))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confidence_curve(eps_grid: torch.Tensor, probs: torch.Tensor, eps_star: float | None, true_class: int,
                     path: str | os.PathLike, title: str, max_legend: int = 10) -> Path:
    """Class confidences along one direction against ε (the paper's Figure 1).

    Args:
        eps_grid: ``[m]`` step sizes ε at which the model was evaluated.
        probs: ``[m, num_classes]`` class probabilities (softmax) of ``x + ε d`` at each ε.
        eps_star: ε_i where the top class first changes, drawn as a vertical dashed line
            (None or non-finite: censored, no line).
        true_class: class of the unperturbed input, drawn thick.
        path, title: PNG output path and figure title.
        max_legend: with more classes than this only the true class and the classes with the
            highest peak confidence are coloured and listed; the rest are thin gray lines.
    Returns the written path.
    """
    grid = torch.as_tensor(eps_grid).detach().cpu().double().reshape(-1)
    probs = torch.as_tensor(probs).detach().cpu().double()
    if probs.ndim != 2 or probs.shape[0] != grid.shape[0]:
        raise ShapeError(f"probs must have shape [{grid.shape[0]}, num_classes], got {tuple(probs.shape)}")
    if grid.numel() == 0:
        raise ShapeError("eps_grid is empty")
    if not (bool(torch.isfinite(grid).all()) and bool(torch.isfinite(probs).all())):
        raise InvalidValueError("eps_grid and probs must be finite")
    num_classes = probs.shape[1]
    if int(true_class) != true_class or not 0 <= int(true_class) < num_classes:
        raise InvalidValueError(f"true_class must be in 0..{num_classes - 1}, got {true_class}")
    true_class = int(true_class)

    peak = probs.max(0).values
    order = [true_class] + [int(c) for c in torch.argsort(peak, descending=True) if int(c) != true_class]
    shown = set(order[:max(1, int(max_legend))]) if num_classes > max_legend else set(range(num_classes))

    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    x = grid.numpy()
    colour_idx = 0
    for c in range(num_classes):
        y = probs[:, c].numpy()
        if c == true_class:
            ax.plot(x, y, color="C0", linewidth=2.6, label=f"class {c} (true)", zorder=3)
        elif c in shown:
            colour_idx += 1
            ax.plot(x, y, color=f"C{colour_idx % 10}", linewidth=1.3, label=f"class {c}")
        else:
            ax.plot(x, y, color="0.75", linewidth=0.8)
    if eps_star is not None and math.isfinite(float(eps_star)):
        ax.axvline(float(eps_star), color="black", linestyle="--", linewidth=1.2,
                   label=f"ε* = {float(eps_star):.4g} (top class changes)")
    ax.set_xlabel("step size ε along direction d")
    ax.set_ylabel("class confidence (softmax probability)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


#: One colour per direction family in every panel and figure.
FAMILY_ORDER = ("random", "rademacher", "pca", "centroid", "pgd", "uap", "fgsm", "mix", "learned")


def family_colour(family: str) -> str:
    """Matplotlib colour of a direction family (the same in every figure)."""
    return f"C{FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)}"


def family_sort_key(family: str) -> int:
    """Position of a family in :data:`FAMILY_ORDER` (unknown families last), for sorting."""
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def log_query_axis(ax: Any) -> None:
    """Log-scaled x axis with plain-number ticks (30, 100, 300, ...) for query counts."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([10, 30, 100, 300, 1000, 3000, 10000, 30000]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def quality_against_queries(configs: dict[tuple[str, str], list[dict[str, Any]]], path: str | os.PathLike,
                            metric: str = "ssim", precision: tuple[int, float] | None = (8, 1e-2)) -> Path:
    """Reconstruction quality against oracle queries per fingerprint, one line per direction family.

    Args:
        configs: ``{(dataset, arch): cells}``, one panel each; cells are the dicts of
            :func:`hesig.study.run_study` (keys family, count, coarse_points, rtol,
            queries_per_fingerprint, ``metric``, baselines). A line joins one family's cells in
            order of direction count.
        path: PNG output path.
        metric: ``"ssim"`` (data_range 1.0) or ``"psnr"`` (dB).
        precision: keep only cells searched at this (coarse points, rtol); None keeps all.
    Returns the written path.
    """
    if metric not in ("ssim", "psnr"):
        raise InvalidValueError(f"metric must be 'ssim' or 'psnr', got {metric!r}")
    if not configs or not all(configs.values()):
        raise ShapeError("quality_against_queries needs at least one non-empty panel")
    n = len(configs)
    fig = new_figure(5.0 * n, 4.2)
    max_families = max(len({c["family"] for c in cells}) for cells in configs.values())
    legend_done = False
    for i, ((dataset, arch), cells) in enumerate(configs.items()):
        ax = fig.add_subplot(1, n, i + 1)
        if precision is not None:
            cells = [c for c in cells if (c["coarse_points"], c["rtol"]) == tuple(precision)]
        if not cells:
            raise ShapeError(f"no cells of {arch} on {dataset} at precision {precision}")
        families = sorted({c["family"] for c in cells}, key=family_sort_key)
        for fam in families:
            row = sorted((c for c in cells if c["family"] == fam), key=lambda c: c["count"])
            label = fam if fam != "mix" else f"mix ({row[0].get('mix')})"
            ax.plot([c["queries_per_fingerprint"] for c in row], [c[metric] for c in row], marker="o",
                    color=family_colour(fam), linewidth=2.6 if fam == "random" else 1.3, label=label)
        base = cells[0]["baselines"]["baseline_class_mean"][f"{metric}_mean"]
        ax.axhline(base, color="grey", linestyle=":", label="class-mean baseline")
        log_query_axis(ax)
        counts = ", ".join(str(c) for c in sorted({c["count"] for c in cells}))
        ax.set_xlabel("mean oracle queries per fingerprint (log scale)")
        ax.set_ylabel("SSIM (interior, data_range 1.0)" if metric == "ssim" else "PSNR (dB)")
        ax.set_title(f"{arch} on {dataset}\n(points: {counts} directions)", fontsize=10)
        ax.grid(alpha=0.3)
        if len(families) == max_families and not legend_done:
            ax.legend(fontsize=7)
            legend_done = True
    return save_figure(fig, path)


def direction_grid(families: dict[str, torch.Tensor], path: str | os.PathLike, title: str, per_row: int = 8) -> Path:
    """The first directions of several families, one row per family, in a diverging colour map.

    Args:
        families: ``{family: [k, C, H, W]}`` direction vectors (unit L2 norm, signed); the first
            ``per_row`` of each are drawn (channel mean for C = 3).
        path: PNG output path.
        title: figure title.
        per_row: directions per row.
    Each row shares one symmetric colour scale ±max|value| with its own colour bar, so signs and
    relative magnitudes inside a family can be read; white is 0.
    Returns the written path.
    """
    if not families:
        raise ShapeError("direction_grid needs at least one family")
    rows = []
    for name, vectors in families.items():
        v = torch.as_tensor(vectors).detach().cpu().float()
        if v.ndim != 4 or v.shape[0] == 0:
            raise ShapeError(f"directions of {name} must be [k, C, H, W] with k >= 1, got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise InvalidValueError(f"directions of {name} contain NaN or infinity")
        rows.append((name, v[:per_row].mean(1)))
    cols = max(v.shape[0] for _, v in rows)
    fig = new_figure(CELL_INCHES * cols + 2.2, CELL_INCHES * len(rows) + 0.7)
    grid = fig.add_gridspec(len(rows), cols + 1, width_ratios=[1.0] * cols + [0.08], wspace=0.08, hspace=0.15)
    for r, (name, v) in enumerate(rows):
        vmax = float(v.abs().max()) or 1.0
        image = None
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            _blank(ax)
            if c < v.shape[0]:
                image = ax.imshow(v[c].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        cbar = fig.colorbar(image, cax=fig.add_subplot(grid[r, cols]))
        cbar.ax.tick_params(labelsize=6)
        cbar.set_label("pixel value", fontsize=6)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


__all__ = ["save_figure", "new_figure", "reconstruction_grid", "class_grid", "signature_plot", "signature_panels",
           "confidence_curve",
           "family_colour", "family_sort_key", "log_query_axis", "quality_against_queries", "direction_grid"]
