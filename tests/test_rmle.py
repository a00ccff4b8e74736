"""He et al.'s white-box rMLE (hesig.attacks.split_inference.rmle) through the attack protocol."""

from __future__ import annotations

import pytest
import torch

from hesig.attacks.base import WhiteBoxEdge
from hesig.attacks.split_inference import RMLE, total_variation
from hesig.data import load_dataset
from hesig.core.errors import InvalidValueError, ShapeError
from hesig.evaluation.metrics import psnr
from hesig.models import build_model
from hesig.models.split import split_model


@pytest.fixture(scope="module")
def mnist_edge():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10).eval()  # rMLE at conv1 needs no training to work
    edge, _ = split_model(model, "conv1")
    images = load_dataset("mnist", "test").images[:6]
    return edge, images


def test_total_variation_matches_a_hand_computed_step():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 2:] = 1.0  # a vertical edge: three unit jumps on the 3x3 difference grid
    assert total_variation(x, beta=2.0).item() == pytest.approx(3.0)
    assert total_variation(x, beta=1.0).item() == pytest.approx(3.0, rel=1e-3)
    assert total_variation(torch.full((2, 1, 5, 5), 0.3), beta=2.0).tolist() == [0.0, 0.0]


def test_rmle_recovers_inputs_from_conv1_features(mnist_edge):
    edge, images = mnist_edge
    with torch.no_grad():
        observed = edge(images)
    recon = RMLE(iterations=300, lr=1e-2).fit(WhiteBoxEdge(edge, (1, 28, 28))).reconstruct(observed).images
    assert recon.shape == images.shape and 0 <= recon.min() and recon.max() <= 1
    assert psnr(recon, images).mean() > 20
    gray = torch.full_like(images, 0.5)
    assert psnr(gray, images).mean() < 10  # the start is far from the answer


def test_rmle_images_in_a_batch_do_not_interact(mnist_edge):
    edge, images = mnist_edge
    with torch.no_grad():
        observed = edge(images)
    attack = RMLE(iterations=40, lr=1e-2, tv_weight=0.05).fit(WhiteBoxEdge(edge, (1, 28, 28)))
    together = attack.reconstruct(observed).images
    alone = attack.reconstruct(observed[2:3]).images
    assert torch.allclose(together[2:3], alone, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"iterations": 0}, {"lr": -1.0}, {"tv_weight": float("nan")}, {"tv_beta": 0.0}])
def test_rmle_rejects_bad_parameters(kwargs):
    with pytest.raises(InvalidValueError):
        RMLE(**kwargs)


def test_rmle_rejects_features_of_the_wrong_shape_or_nan(mnist_edge):
    edge, _ = mnist_edge
    with pytest.raises(ShapeError, match="edge model outputs"):
        RMLE(iterations=1).fit(WhiteBoxEdge(edge, (1, 28, 28))).reconstruct(torch.zeros(2, 16, 8, 8))
    with pytest.raises(InvalidValueError, match="NaN"):
        RMLE(iterations=1).fit(WhiteBoxEdge(edge, (1, 28, 28))).reconstruct(torch.full((2, 8, 24, 24), float("nan")))
