"""Architectures, split points, the exact inference rewrite and checkpoint round trips."""

import pytest
import torch

from hesig.core.errors import CheckpointError, InvalidValueError, ShapeError
from hesig.models import build_model, layer_names, load_model, save_model, split_model
from hesig.models.inference import fast_inference_copy

LENET_LAYERS = ["conv1", "ReLU1", "pool1", "conv2", "ReLU2", "pool2", "flatten", "fc1", "fc1act", "fc2", "fc2act", "fc3"]


def test_lenet5_has_the_papers_layer_names_and_shapes():
    model = build_model("lenet5", (1, 28, 28), 10)
    assert layer_names(model) == LENET_LAYERS
    x = torch.rand(3, 1, 28, 28)
    edge, cloud = split_model(model, "ReLU2")
    assert edge(x).shape == (3, 16, 8, 8)
    assert torch.allclose(cloud(edge(x)), model(x))
    assert sum(p.numel() for p in model.parameters()) == 8 * 25 + 8 + 16 * 8 * 25 + 16 + 256 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10


def test_hecnn_matches_the_tenseal_tutorial_shapes():
    model = build_model("hecnn", (1, 28, 28), 10)
    assert model.conv1.stride == (3, 3) and model.conv1.kernel_size == (7, 7) and model.conv1.out_channels == 4
    assert model.fc1.in_features == 256 and model.fc1.out_features == 64 and model.fc2.out_features == 10
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model.act1(model.conv1(x)), model.conv1(x) ** 2)


def test_unknown_arch_and_split():
    with pytest.raises(InvalidValueError, match="unknown arch"):
        build_model("resnet", (1, 28, 28), 10)
    with pytest.raises(InvalidValueError, match="no layer 'conv9'"):
        split_model(build_model("lenet5", (1, 28, 28), 10), "conv9")
    with pytest.raises(ShapeError):
        build_model("lenet5", (1, 8, 8), 10)


@pytest.mark.parametrize("arch", ["lenet5", "hecnn"])
def test_fast_inference_copy_is_exact(arch):
    torch.manual_seed(0)
    model = build_model(arch, (1, 28, 28), 10).eval()
    x = torch.randn(256, 1, 28, 28)
    fast = fast_inference_copy(model)
    with torch.no_grad():
        assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)
        assert torch.equal(fast(x).argmax(1), model(x).argmax(1))
    assert layer_names(model)[1] == "ReLU1" if arch == "lenet5" else True  # the original is untouched


def test_checkpoint_round_trip_and_arch_mismatch(tmp_path):
    model = build_model("hecnn", (1, 28, 28), 10)
    save_model(model, tmp_path / "m", {"arch": "hecnn", "in_shape": [1, 28, 28], "num_classes": 10})
    loaded = load_model(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))
    # Same weights, metadata claiming another architecture: refused with one line.
    save_model(model, tmp_path / "bad", {"arch": "lenet5", "in_shape": [1, 28, 28], "num_classes": 10})
    with pytest.raises(CheckpointError, match="does not fit arch 'lenet5'"):
        load_model(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing")
