"""Tests for hesig.viz: every figure writes a PNG; unwritable paths raise OutputError."""

import pytest
import torch

from hesig.evaluation import viz
from hesig.core.errors import InvalidValueError, OutputError, ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def _images(n, c=1, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_save_figure_writes_png(tmp_path):
    fig = viz.new_figure(2, 2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1])
    out = viz.save_figure(fig, tmp_path / "sub" / "plain.png")
    _assert_png(out)
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # no temp file left behind


def test_reconstruction_grid(tmp_path):
    rows = [_images(4, seed=1), _images(4, seed=2), _images(3, seed=3)]  # ragged last row is allowed
    path = tmp_path / "fig2.png"
    out = viz.reconstruction_grid(rows, ["original", "reconstruction", "CKKS ε"], path, "Figure 2",
                                  col_labels=["0", "1", "2", "3"])
    assert out == path
    _assert_png(path)


def test_reconstruction_grid_rgb(tmp_path):
    viz.reconstruction_grid([_images(2, c=3, size=16), _images(2, c=3, size=16, seed=4)],
                            ["original", "reconstruction"], tmp_path / "rgb.png", "RGB")
    _assert_png(tmp_path / "rgb.png")


def test_reconstruction_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ShapeError):
        viz.reconstruction_grid([_images(2)], ["a", "b"], tmp_path / "x.png", "t")
    with pytest.raises(ShapeError):
        viz.reconstruction_grid([_images(2), _images(2, c=3)], ["a", "b"], tmp_path / "x.png", "t")
    with pytest.raises(InvalidValueError):
        viz.reconstruction_grid([_images(2) * 2], ["a"], tmp_path / "x.png", "t")


def test_class_grid_wraps(tmp_path):
    originals, recons = _images(13, seed=5), _images(13, seed=6)
    viz.class_grid(originals, recons, tmp_path / "fig3.png", "Figure 3: class 7", max_cols=5)
    _assert_png(tmp_path / "fig3.png")


def test_signature_plot(tmp_path):
    g = torch.Generator().manual_seed(7)
    eps = torch.rand(4, 12, generator=g) * 10 + 0.01
    censored = torch.zeros(4, 12, dtype=torch.bool)
    censored[1, 3] = censored[2, 7] = True
    viz.signature_plot(eps, censored, torch.tensor([3, 3, 5, 8]), tmp_path / "sig.png", "ε-signatures")
    _assert_png(tmp_path / "sig.png")
    with pytest.raises(ShapeError):
        viz.signature_plot(eps, censored[:, :5], [3, 3, 5, 8], tmp_path / "bad.png", "t")


def test_confidence_curve(tmp_path):
    grid = torch.linspace(0, 2, 50)
    logits = torch.stack([3 - 3 * grid, 3 * grid - 2, torch.zeros_like(grid)], dim=1)
    probs = logits.softmax(1)
    viz.confidence_curve(grid, probs, 0.83, 0, tmp_path / "fig1.png", "Figure 1")
    _assert_png(tmp_path / "fig1.png")
    viz.confidence_curve(grid, torch.rand(50, 100).softmax(1), None, 4, tmp_path / "many.png", "100 classes")
    _assert_png(tmp_path / "many.png")
    with pytest.raises(InvalidValueError):
        viz.confidence_curve(grid, probs, 0.83, 3, tmp_path / "bad.png", "t")


def test_unwritable_path_raises_output_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # a file where a directory should be: unwritable even as root
    with pytest.raises(OutputError):
        viz.reconstruction_grid([_images(2)], ["original"], blocker / "fig.png", "t")
    with pytest.raises(OutputError):
        viz.signature_plot(torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.bool), [0], blocker / "s.png", "t")


def test_direction_grid(tmp_path):
    families = {"random": torch.randn(10, 1, 8, 8), "pca": torch.randn(3, 1, 8, 8), "rgb": torch.randn(4, 3, 8, 8)}
    _assert_png(viz.direction_grid(families, tmp_path / "dirs.png", title="directions"))
    with pytest.raises(ShapeError):
        viz.direction_grid({}, tmp_path / "x.png", title="t")
    with pytest.raises(ShapeError):
        viz.direction_grid({"flat": torch.randn(3, 64)}, tmp_path / "x.png", title="t")
    with pytest.raises(InvalidValueError):
        viz.direction_grid({"nan": torch.full((2, 1, 4, 4), float("nan"))}, tmp_path / "x.png", title="t")


def _cell(family, count, ssim, queries, g=8, rtol=1e-2):
    base = {"psnr_mean": 13.0, "ssim_mean": 0.48}
    return {"family": family, "count": count, "coarse_points": g, "rtol": rtol, "queries_per_fingerprint": queries,
            "ssim": ssim, "psnr": 10 + 10 * ssim, "mix": None, "baselines": {"baseline_class_mean": base}}


def test_quality_against_queries(tmp_path):
    cells = [_cell(f, k, 0.3 + k / 500 + i / 100, 13 * k) for i, f in enumerate(("random", "pca", "mix")) for k in (10, 50, 100)]
    cells.append(_cell("random", 100, 0.9, 400, g=1, rtol=0.3))  # another precision: filtered out
    _assert_png(viz.quality_against_queries({("mnist", "hecnn"): cells}, tmp_path / "q.png"))
    _assert_png(viz.quality_against_queries({("mnist", "hecnn"): cells, ("digits", "mlp"): cells[:3]},
                                            tmp_path / "q2.png", metric="psnr", precision=None))
    with pytest.raises(InvalidValueError):
        viz.quality_against_queries({("mnist", "hecnn"): cells}, tmp_path / "x.png", metric="mse")
    with pytest.raises(ShapeError):
        viz.quality_against_queries({("mnist", "hecnn"): cells}, tmp_path / "x.png", precision=(3, 0.5))
