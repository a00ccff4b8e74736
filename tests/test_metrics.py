"""Tests for hesig.metrics: PSNR/SSIM conventions, validation, baselines and the report."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesig.evaluation import metrics
from hesig.core.errors import InvalidValueError, ShapeError
from hesig.evaluation.metrics import check_images, class_mean_baseline, class_recovery, mean_image_baseline, psnr, reconstruction_report, ssim, ssim_full_map, ssim_window, summarize


def _smooth_images(n, size=28, seed=0):
    """Random but image-like (spatially correlated) batch in [0, 1], each image min-max stretched."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), torch.ones(1, 1, 5, 5) / 25)
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return ((x - lo) / (hi - lo)).float()


# ------------------------------------------------------------------ PSNR


def test_psnr_identical_images_capped_at_100db():
    x = torch.rand(3, 1, 8, 8)
    out = psnr(x, x.clone())
    assert out.shape == (3,)
    assert torch.allclose(out, torch.full((3,), 100.0))


def test_psnr_known_mse():
    a = torch.zeros(2, 1, 5, 5)
    b = torch.full((2, 1, 5, 5), 0.1)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)  # MSE 0.01 -> 20 dB
    c = torch.ones(1, 3, 4, 4)
    assert torch.allclose(psnr(torch.zeros(1, 3, 4, 4), c), torch.zeros(1), atol=1e-6)  # MSE 1 -> 0 dB


def test_psnr_is_per_image():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 40.0]), atol=1e-3)


# ------------------------------------------------------------------ SSIM


def test_ssim_identical_is_one():
    x = _smooth_images(4)
    out = ssim(x, x.clone())
    assert out.shape == (4,)
    assert torch.allclose(out, torch.ones(4), atol=1e-5)


def test_ssim_data_range_is_fixed_not_inferred():
    t = _smooth_images(4, seed=1)
    r = (t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    full = ssim(r, t)
    half = ssim(0.5 * r, 0.5 * t)
    # With a data range inferred from the batch SSIM would be scale-invariant; with C1, C2 fixed by
    # data_range=1 halving both images changes it.
    assert (full - half).abs().min() > 1e-3


def test_ssim_window_sizes():
    assert ssim_window(28, 28) == (11, 1.5)
    assert ssim_window(32, 11) == (11, 1.5)
    k, sigma = ssim_window(8, 8)
    assert k == 7 and sigma == pytest.approx(1.5 * 7 / 11)
    assert ssim_window(10, 9)[0] == 9
    # torchmetrics derives its gaussian kernel size from sigma; it must equal the chosen window.
    for side in range(1, 12):
        k, sigma = ssim_window(side, side)
        assert k % 2 == 1 and k <= side
        assert 2 * int(3.5 * sigma + 0.5) + 1 == k


def test_ssim_8x8_digits():
    t = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    r = (t + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    assert torch.allclose(ssim(t, t.clone()), torch.ones(5), atol=1e-5)
    s = ssim(r, t)
    assert s.shape == (5,) and torch.isfinite(s).all() and (s < 1).all()


def test_ssim_chunking_does_not_change_result():
    t = _smooth_images(7, seed=5)
    r = _smooth_images(7, seed=6)
    assert torch.allclose(ssim(r, t, chunk_size=3), ssim(r, t), atol=1e-6)


def test_ssim_rgb():
    t = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ssim(t, t.clone()), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("size", [28, 8])
def test_ssim_agrees_with_skimage(size):
    """ssim() is scikit-image's SSIM (interior of the map); ssim_full_map() averages the whole map.

    skimage (gaussian_weights, sigma, population covariance, data_range=1) averages the SSIM map
    over the interior only, dropping a (k-1)/2-pixel border -- the papers' convention, which
    ssim() follows. ssim_full_map() is torchmetrics' mean over the whole reflect-padded map.
    """
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    t = _smooth_images(16, size=size, seed=8)
    r = (t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    k, sigma = ssim_window(size, size)
    ref = torch.tensor([structural_similarity(r[i, 0].numpy(), t[i, 0].numpy(), data_range=1.0,
                                              gaussian_weights=True, sigma=sigma, use_sample_covariance=False)
                        for i in range(len(t))])
    assert torch.allclose(ssim(r, t).double(), ref.double(), atol=1e-4)
    # The full-map convention is torchmetrics' own reduction, and it is a different number.
    tm = metrics._tm_ssim(r, t, gaussian_kernel=True, sigma=sigma, kernel_size=k, data_range=1.0, reduction="none")
    full = ssim_full_map(r, t).double()
    assert torch.allclose(full, tm.double(), atol=1e-6)
    assert (full - ref).abs().max() > 1e-3


# ------------------------------------------------------------------ validation


def test_nan_input_raises():
    x = torch.rand(2, 1, 8, 8)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidValueError):
        psnr(bad, x)
    with pytest.raises(InvalidValueError):
        ssim(x, bad)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(InvalidValueError):
        check_images(bad, "x")


def test_out_of_range_raises_with_slack():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InvalidValueError, match=r"\[0, 1\]"):
        check_images(x + 1.01, "x")
    with pytest.raises(InvalidValueError):
        check_images(x - 1.0, "x")
    check_images(x.clamp(0, 1) * (1 + 5e-7), "x")  # within the 1e-6 slack
    with pytest.raises(InvalidValueError):
        check_images((x * 255).to(torch.uint8), "x")


def test_shape_errors():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ShapeError):
        psnr(x, torch.rand(2, 1, 8, 7))
    with pytest.raises(ShapeError):
        ssim(x, torch.rand(3, 1, 8, 8))
    with pytest.raises(ShapeError):
        check_images(torch.rand(1, 8, 8), "x")
    with pytest.raises(ShapeError):
        check_images(torch.rand(0, 1, 8, 8), "x")


def test_error_messages_are_one_line():
    with pytest.raises(ShapeError) as info:
        psnr(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 7))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ baselines


def test_mean_image_baseline():
    train = torch.tensor([0.0, 0.2, 0.4, 0.6]).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    out = mean_image_baseline(train, 3)
    assert out.shape == (3, 1, 2, 2)
    assert torch.allclose(out, torch.full((3, 1, 2, 2), 0.3))


def test_class_mean_baseline_toy():
    train = torch.tensor([0.0, 0.2, 0.5, 1.0, 0.8]).view(5, 1, 1, 1).expand(5, 1, 2, 3).clone()
    train_labels = torch.tensor([0, 0, 1, 2, 2])
    out = class_mean_baseline(train, train_labels, torch.tensor([2, 0, 1, 2]))
    assert out.shape == (4, 1, 2, 3)
    expected = torch.tensor([0.9, 0.1, 0.5, 0.9]).view(4, 1, 1, 1).expand(4, 1, 2, 3)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(InvalidValueError):
        class_mean_baseline(train, train_labels, torch.tensor([3]))  # no training image of class 3
    with pytest.raises(ShapeError):
        class_mean_baseline(train, train_labels[:3], torch.tensor([0]))


def _toy_classifier():
    """Two classes on 1x1x2 images: logit_c = pixel c, so the brighter pixel wins."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    return model


def test_class_recovery_toy_linear():
    model = _toy_classifier()
    model.train()
    recon = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.6, 0.3], [0.4, 0.5]]).view(4, 1, 1, 2)
    labels = torch.tensor([0, 1, 1, 1])  # predictions are 0, 1, 0, 1 -> 3/4 correct
    acc = class_recovery(model, recon, labels, batch_size=3)
    assert isinstance(acc, float) and acc == pytest.approx(0.75)
    assert model.training  # mode restored
    with pytest.raises(ShapeError):
        class_recovery(model, recon, labels[:3])


# ------------------------------------------------------------------ summaries


def test_summarize():
    t = _smooth_images(3, size=12, seed=10)
    out = summarize(t, t.clone())
    assert set(out) == {"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "ssim_full_map_mean", "ssim_full_map_std", "n"}
    assert out["n"] == 3 and isinstance(out["n"], int)
    assert all(isinstance(out[k], float) for k in out if k != "n")
    assert out["psnr_mean"] == pytest.approx(100.0) and out["psnr_std"] == pytest.approx(0.0)
    assert out["ssim_mean"] == pytest.approx(1.0, abs=1e-5) and out["ssim_full_map_mean"] == pytest.approx(1.0, abs=1e-5)
    noisy = (t + 0.2 * torch.randn(t.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    out = summarize(noisy, t)
    assert out["ssim_mean"] == pytest.approx(float(ssim(noisy, t).mean()), abs=1e-6)
    assert out["ssim_full_map_mean"] == pytest.approx(float(ssim_full_map(noisy, t).mean()), abs=1e-6)
    single = summarize(t[:1], t[:1])
    assert single["n"] == 1 and single["psnr_std"] == 0.0 and not math.isnan(single["ssim_std"])


def test_reconstruction_report_keys():
    g = torch.Generator().manual_seed(11)
    train = torch.rand(20, 1, 1, 2, generator=g)
    train_labels = (train[:, 0, 0, 1] > train[:, 0, 0, 0]).long()
    target = torch.rand(6, 1, 1, 2, generator=g)
    labels = (target[:, 0, 0, 1] > target[:, 0, 0, 0]).long()
    recon = (target + 0.01).clamp(0, 1)
    row_keys = {"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "ssim_full_map_mean", "ssim_full_map_std", "n",
                "class_recovery"}

    report = reconstruction_report(recon, target, labels, train, train_labels, classifier=_toy_classifier())
    assert set(report) == {"data_range", "ssim", "attack", "baseline_mean_image", "baseline_class_mean"}
    assert report["data_range"] == 1.0
    assert report["ssim"]["kernel_size"] == 1 and report["ssim"]["sigma"] == pytest.approx(1.5 / 11)
    for key in ("attack", "baseline_mean_image", "baseline_class_mean"):
        assert set(report[key]) == row_keys
        assert report[key]["n"] == 6
        assert 0.0 <= report[key]["class_recovery"] <= 1.0
    assert report["attack"]["psnr_mean"] == pytest.approx(40.0, abs=0.5)
    json.dumps(report)  # JSON-serialisable

    plain = reconstruction_report(recon, target, labels, train, train_labels)
    assert plain["attack"]["class_recovery"] is None
    with pytest.raises(ShapeError):
        reconstruction_report(recon, target, labels[:5], train, train_labels)
    with pytest.raises(ShapeError):
        reconstruction_report(recon, target, labels, torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))


def test_reconstruction_report_28x28_window():
    t = _smooth_images(4, seed=12)
    report = reconstruction_report(t, t, torch.tensor([0, 1, 0, 1]), _smooth_images(6, seed=13),
                                   torch.tensor([0, 1, 0, 1, 0, 1]))
    assert (report["ssim"]["kernel_size"], report["ssim"]["sigma"]) == (11, 1.5)
    assert "central 18 x 18" in report["ssim"]["ssim"] and "8 x 8 -> 7 x 7" in report["ssim"]["small_images"]
    assert report["attack"]["ssim_mean"] == pytest.approx(1.0, abs=1e-5)
    assert report["baseline_class_mean"]["ssim_mean"] < 1.0


def test_ssim_for_training_is_the_scored_ssim_with_gradients():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand((5, 1, 28, 28), generator=gen)
    recon = (target + 0.2 * torch.randn((5, 1, 28, 28), generator=gen)).clamp(0, 1).requires_grad_(True)
    value = metrics.ssim_for_training(recon, target)
    assert torch.allclose(value.detach(), ssim(recon.detach(), target), atol=1e-6)
    (1 - value).mean().backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_decoder_loss_fitting_the_metric_trains_and_unknown_losses_are_refused():
    from hesig.signature.decoders import train_decoder
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((64, 1, 8, 8), generator=gen)
    features = images.flatten(1)[:, :16]
    net, rep = train_decoder(features, images, ngf=8, epochs=3, seed=0, progress=False, loss="ssim-l1")
    assert rep.loss == "ssim-l1" and rep.epochs_run == 3 and len(rep.val_mse) == 3 and math.isfinite(rep.best_val_mse)
    with pytest.raises(InvalidValueError, match="decoder loss must be one of mse, ssim-l1"):
        train_decoder(features, images, ngf=8, epochs=1, progress=False, loss="perceptual")
