"""He et al.'s black-box and query-free attacks, the feature-noise defense, training halves, the
own-range SSIM and the `hesig attack` commands (on the bundled digits, so they always run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hesig.attacks.base import EdgeQueryAccess, ShadowKnowledge
from hesig.attacks.split_inference import InverseNetwork, ShadowModel, inverse_architecture, shadow_architecture
from hesig.data import load_dataset, train_half
from hesig.defenses.feature_noise import FeatureNoise, edge_features, split_accuracy
from hesig.core.errors import InvalidValueError, ShapeError
from hesig.evaluation.metrics import psnr, ssim, ssim_own_range
from hesig.models import build_model, split_model, train_classifier



@pytest.fixture(scope="module")
def digits_target():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    torch.manual_seed(0)
    model = build_model("mlp", train.shape, train.num_classes)
    train_classifier(model, train.images, train.labels, epochs=30, seed=0, progress=False)
    return model, train, test


@pytest.mark.parametrize("split, shape", [("conv1", (8, 24, 24)), ("ReLU2", (16, 8, 8))])
def test_paper_inverse_networks_map_lenet5_features_to_28x28(split, shape):
    model = build_model("lenet5", (1, 28, 28), 10)
    edge, _ = split_model(model, split)
    assert tuple(edge(torch.zeros(2, 1, 28, 28)).shape[1:]) == shape
    for design in ("paper", "auto"):
        net = inverse_architecture(shape, (1, 28, 28), design)
        assert net(torch.zeros(3, *shape)).shape == (3, 1, 28, 28)
    with pytest.raises(ShapeError, match="paper's inverse"):
        inverse_architecture((6, 24, 24), (1, 28, 28), "paper")
    assert inverse_architecture((84,), (1, 28, 28))(torch.zeros(2, 84)).shape == (2, 1, 28, 28)


def test_inverse_network_learns_the_inverse_of_a_black_box(digits_target):
    model, train, test = digits_target
    edge, _ = split_model(model, "fc1act")
    answers = edge_features(edge, train.images)  # one query per training image
    inverse = InverseNetwork(epochs=40, lr=3e-3, seed=0).fit(EdgeQueryAccess(train.images, answers))
    report = inverse.training
    assert report["queries"] == len(train) and report["train_loss"][-1] < report["train_loss"][0] / 2
    recon = inverse.reconstruct(edge_features(edge, test.images)).images
    mean_image = train.images.mean(0, keepdim=True).expand_as(test.images)
    assert psnr(recon, test.images).mean() > psnr(mean_image, test.images).mean() + 2
    with pytest.raises(ShapeError, match="trained on"):
        inverse.reconstruct(torch.zeros(2, 7))
    with pytest.raises(InvalidValueError, match="NaN"):
        inverse.reconstruct(torch.full_like(answers[:2], float("nan")))


def test_inverse_network_validates_parameters_and_state():
    with pytest.raises(InvalidValueError):
        InverseNetwork(design="deep")
    with pytest.raises(InvalidValueError):
        InverseNetwork(epochs=0)
    with pytest.raises(InvalidValueError, match="not trained"):
        InverseNetwork().reconstruct(torch.zeros(1, 4))


def test_different_shadow_structures_are_table5():
    model = build_model("lenet5", (1, 28, 28), 10)
    for split, convs in (("conv1", 2), ("ReLU2", 4)):
        edge, _ = split_model(model, split)
        shadow = shadow_architecture(edge, "different")
        kernels = [m.kernel_size for m in shadow.modules() if isinstance(m, nn.Conv2d)]
        assert kernels == [(3, 3)] * convs
        # No nonlinearity the edge lacks (He et al.'s code: two 3x3 convolutions, nothing between).
        assert sum(isinstance(m, nn.ReLU) for m in shadow) == sum(isinstance(m, nn.ReLU) for m in edge)
        x = torch.rand(2, 1, 28, 28)
        assert shadow(x).shape == edge(x).shape
    same = shadow_architecture(edge, "same")
    assert [type(m) for m in same] == [type(m) for m in edge]
    assert not torch.equal(same.conv1.weight, edge.conv1.weight)  # structure only, fresh weights


def test_shadow_trained_through_the_frozen_cloud_classifies(digits_target):
    model, train, test = digits_target
    edge, cloud = split_model(model, "fc1act")
    before = {k: v.clone() for k, v in cloud.state_dict().items()}
    template, _ = split_model(build_model("mlp", train.shape, train.num_classes), "fc1act")
    for structure in ("same", "different"):
        attack = ShadowModel(structure=structure, epochs=15, lr=3e-3, seed=0).fit(
            ShadowKnowledge(template, cloud, train.images, train.labels))
        shadow, report = attack.shadow, attack.training
        assert split_accuracy(shadow, cloud, test.images, test.labels) > 0.8, structure
        assert report["train_loss"][-1] < report["train_loss"][0]
    assert all(torch.equal(before[k], v) for k, v in cloud.state_dict().items())  # the cloud stays frozen
    assert all(p.requires_grad for p in cloud.parameters())


def test_feature_noise_is_seeded_and_costs_accuracy(digits_target):
    model, _, test = digits_target
    edge, cloud = split_model(model, "fc1act")
    v = edge_features(edge, test.images)
    assert torch.equal(FeatureNoise(0.0)(v), v)
    assert torch.equal(FeatureNoise(0.5, seed=3)(v), FeatureNoise(0.5, seed=3)(v))
    clean = split_accuracy(edge, cloud, test.images, test.labels)
    noisy = split_accuracy(edge, cloud, test.images, test.labels, FeatureNoise(50.0, seed=0))
    assert noisy < clean - 0.3
    with pytest.raises(InvalidValueError):
        FeatureNoise(-1.0)


def test_training_halves_are_disjoint_fixed_and_cover_the_split():
    train = load_dataset("digits", "train")
    a, b = train_half(train, "a"), train_half(train, "b")
    assert len(a) + len(b) == len(train) and not set(a.indices.tolist()) & set(b.indices.tolist())
    assert torch.equal(train_half(train, "a").indices, a.indices)
    assert train_half(train, "all") is train
    with pytest.raises(InvalidValueError, match="training half"):
        train_half(train, "c")


@pytest.mark.parametrize("channels", [1, 3])
def test_own_range_ssim_is_he_et_al_scikit_image_call(channels):
    """He et al.'s code: compare_ssim(ref, inv, data_range=inv.max() - inv.min()), skimage defaults."""
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, channels, 16, 16, generator=gen)
    recon = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    recon[1] = 0.05 * recon[1]  # a dim reconstruction: its own range sets the SSIM constants
    ours = ssim_own_range(recon, target)
    for i in range(3):
        ref, inv = target[i].double().numpy(), recon[i].double().numpy()
        expected = structural_similarity(np.moveaxis(ref, 0, -1), np.moveaxis(inv, 0, -1), data_range=inv.max() - inv.min(),
                                         channel_axis=-1) if channels == 3 else \
            structural_similarity(ref[0], inv[0], data_range=inv.max() - inv.min())
        assert float(ours[i]) == pytest.approx(expected, abs=1e-5)
    # Not hesig's SSIM (gaussian 11 x 11, data range 1): low contrast images score differently.
    faint_target = 0.05 * target
    faint = (faint_target + 0.01 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    assert (ssim_own_range(faint, faint_target) - ssim(faint, faint_target)).abs().min() > 0.05


# -- CLI --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("collab") / "target"
    code = None
    try:
        from hesig.cli import main
        main(["train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "15", "--train-half", "a",
              "--out", str(out), "--quiet"])
    except SystemExit as exc:
        code = exc.code
    assert code in (None, 0)
    return out


def test_attack_commands_write_metrics_with_queries_and_hashes(half_model, cli, tmp_path):
    meta = json.loads((half_model / "model.json").read_text())
    assert meta["train_half"] == "a"
    cells = {
        "rmle": ["attack", "rmle", "--iterations", "50"],
        "inverse": ["attack", "inverse-network", "--query-set", "disjoint", "--epochs", "3"],
        "gaussian": ["attack", "inverse-network", "--query-set", "gaussian", "--queries", "300", "--epochs", "2"],
        "shadow": ["attack", "shadow", "--shadow-data", "disjoint", "--structure", "different", "--epochs", "2",
                   "--iterations", "30"],
    }
    results = {}
    for name, argv in cells.items():
        code, out, err = cli.run(*argv, "--model", half_model, "--split", "fc1act", "--indices", "0:40",
                             "--quiet", "--out", tmp_path / name)
        assert code == 0, err
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert results[name]["model_hash"] == meta["model_hash"] and results[name]["n"] == 40
        assert results[name]["metrics"]["data_range"] == 1.0
        assert len(results[name]["protocol"]["test_indices"]) == 10  # the first test image of each class
        assert (tmp_path / name / "protocol.png").read_bytes()[:4] == b"\x89PNG"
    assert results["rmle"]["queries"] == 0 and results["shadow"]["queries"] == 0
    assert results["inverse"]["queries"] == len(load_dataset("digits", "train")) - meta_half_size(meta)
    assert results["gaussian"]["queries"] == 300
    # resuming the rMLE job reuses its chunk and gives identical numbers
    code, _, err = cli.run(*cells["rmle"], "--model", half_model, "--split", "fc1act", "--indices", "0:40",
                       "--quiet", "--out", tmp_path / "rmle")
    assert code == 0, err
    again = json.loads((tmp_path / "rmle" / "metrics.json").read_text())
    assert again["metrics"]["attack"] == results["rmle"]["metrics"]["attack"]


def meta_half_size(meta):
    return len(train_half(load_dataset("digits", "train"), meta["train_half"]))


@pytest.mark.parametrize("argv, fragment", [
    (["attack", "rmle", "--split", "conv1"], "has no layer 'conv1'"),
    (["attack", "shadow", "--split", "fc9"], "has no layer 'fc9'"),
    (["attack", "inverse-network", "--split", "fc1act", "--design", "paper"], "paper's inverse networks"),
    (["attack", "rmle", "--split", "fc1act", "--indices", "5000:6000"], "indices"),
])
def test_attack_bad_input_is_one_line(half_model, cli, tmp_path, argv, fragment):
    code, _, err = cli.run(*argv, "--model", half_model, "--out", tmp_path / "x", "--quiet")
    cli.assert_error(code, err, fragment)


def test_disjoint_set_needs_a_half_trained_target(cli, tmp_path):
    from hesig.cli import main
    try:
        main(["train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--out", str(tmp_path / "m"),
              "--quiet"])
    except SystemExit:
        pass
    cli.capsys.readouterr()
    code, _, err = cli.run("attack", "shadow", "--model", tmp_path / "m", "--split", "fc1act", "--shadow-data",
                       "disjoint", "--out", tmp_path / "x")
    cli.assert_error(code, err, "--train-half a")


def test_checkpoint_of_another_architecture_is_one_line(half_model, cli, tmp_path):
    target = tmp_path / "wrong"
    target.mkdir()
    for name in ("model.safetensors", "model.json"):
        (target / name).write_bytes((half_model / name).read_bytes())
    from hesig.core.io import load_tensors, save_tensors
    state, meta = load_tensors(target / "model.safetensors")
    save_tensors(target / "model.safetensors", state, {**meta, "arch": "lenet5"})
    code, _, err = cli.run("attack", "rmle", "--model", target, "--split", "conv1", "--out", tmp_path / "x")
    cli.assert_error(code, err, "does not fit arch 'lenet5'")


def test_cifar_cnn_has_he_et_al_split_points():
    model = build_model("cifar_cnn", (3, 32, 32), 10)
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    shapes = {name: tuple(split_model(model, name)[0](x).shape[1:]) for name in ("conv11", "ReLU22", "ReLU32")}
    assert shapes == {"conv11": (64, 32, 32), "ReLU22": (128, 16, 16), "ReLU32": (128, 8, 8)}


def test_cifar_shadows_of_a_different_structure_are_table5():
    model = build_model("cifar_cnn", (3, 32, 32), 10)
    x = torch.rand(2, 3, 32, 32)
    expected = {"conv11": [((3, 3), 16), ((3, 3), 64)], "ReLU22": [((5, 5), 64), ((5, 5), 128)],
                "ReLU32": [((5, 5), 64), ((5, 5), 128), ((5, 5), 128)]}
    for split, convs in expected.items():
        edge, _ = split_model(model, split)
        shadow = shadow_architecture(edge, "different")
        assert [(m.kernel_size, m.out_channels) for m in shadow.modules() if isinstance(m, nn.Conv2d)] == convs
        assert shadow(x).shape == edge(x).shape, split
    with pytest.raises(InvalidValueError, match="conv11, ReLU22 and ReLU32, not conv12"):
        shadow_architecture(split_model(model, "conv12")[0], "different")


# -- the attack protocol ----------------------------------------------------------------------------------

def test_each_split_attack_fits_its_knowledge_and_returns_a_reconstruction(digits_target):
    from hesig.attacks.base import Reconstruction, WhiteBoxEdge
    from hesig.attacks.split_inference import RMLE
    model, train, test = digits_target
    edge, cloud = split_model(model, "fc1act")
    template, _ = split_model(build_model("mlp", train.shape, train.num_classes), "fc1act")
    observed = edge_features(edge, test.images[:5])
    attacks = {
        "rmle": (RMLE(iterations=3), WhiteBoxEdge(edge, train.shape), 0),
        "inverse": (InverseNetwork(epochs=1), EdgeQueryAccess(train.images[:100], edge_features(edge, train.images[:100])), 100),
        "shadow": (ShadowModel(epochs=1, rmle=RMLE(iterations=3)),
                   ShadowKnowledge(template, cloud, train.images[:100], train.labels[:100]), 0),
    }
    for name, (attack, knowledge, queries) in attacks.items():
        result = attack.fit(knowledge).reconstruct(observed)
        assert isinstance(result, Reconstruction), name
        assert result.images.shape == (5, *train.shape) and result.images.dtype == torch.float32, name
        assert 0 <= result.images.min() and result.images.max() <= 1, name
        assert result.queries == queries and result.seconds >= 0, name
    wrong = {"rmle": attacks["inverse"][1], "inverse": attacks["rmle"][1], "shadow": attacks["rmle"][1]}
    for name, knowledge in wrong.items():
        with pytest.raises(InvalidValueError, match="receives") as info:
            attacks[name][0].__class__().fit(knowledge)
        assert "\n" not in str(info.value)


def test_knowledge_is_checked_when_it_is_handed_over():
    with pytest.raises(ShapeError, match="matching pairs"):
        EdgeQueryAccess(torch.zeros(3, 1, 8, 8), torch.zeros(2, 4))
    with pytest.raises(InvalidValueError, match="NaN"):
        EdgeQueryAccess(torch.zeros(2, 1, 8, 8), torch.full((2, 4), float("nan")))
    with pytest.raises(ShapeError, match="labels"):
        ShadowKnowledge(nn.Sequential(), nn.Sequential(), torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


# -- resume and refusal through the run store -------------------------------------------------------------

def test_attack_job_resumes_from_its_run_store_and_refuses_another_configuration(half_model, tmp_path):
    from hesig.core.errors import MismatchError
    from hesig.jobs.split_inference import attack_job
    out = tmp_path / "shadow"
    common = dict(split="fc1act", indices="0:12", shadow_data="disjoint", epochs=1, rmle={"iterations": 5},
                  chunk_size=5, progress=False, device="cpu")
    first = attack_job("shadow", half_model, out=out, **common)
    chunks = sorted(p.name for p in (out / "chunks").glob("*.safetensors"))
    assert chunks == ["rmle_000000_000005.safetensors", "rmle_000005_000010.safetensors", "rmle_000010_000012.safetensors"]
    assert json.loads((out / "run.json").read_text())["kind"] == "shadow attack"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    (out / "chunks" / chunks[1]).unlink()  # a killed run: one chunk missing
    again = attack_job("shadow", half_model, out=out, **common)
    assert again["ssim_mean"] == first["ssim_mean"] and again["psnr_mean"] == first["psnr_mean"]
    assert (out / "shadow.safetensors").stat().st_mtime_ns == stamps["shadow.safetensors"]  # not retrained
    assert (out / "chunks" / chunks[0]).stat().st_mtime_ns == stamps[chunks[0]]  # reused
    assert (out / "chunks" / chunks[1]).exists()  # recomputed
    with pytest.raises(MismatchError, match="another configuration") as info:
        attack_job("shadow", half_model, out=out, **{**common, "epochs": 2})
    assert "\n" not in str(info.value)
    with pytest.raises(MismatchError, match="not a rmle attack run"):
        attack_job("rmle", half_model, out=out, split="fc1act", indices="0:12", progress=False, device="cpu")
