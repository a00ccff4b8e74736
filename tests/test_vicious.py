"""Vicious classifiers (Malekzadeh & Gunduz): Algorithm 1, risk R, detection, output defenses, CLI."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from hesig.attacks.base import LabelledData, check_labelled
from hesig.attacks.vicious.classifier import ReconstructionLoss, differentiable_ssim, ViciousAttack, parse_beta, release, resize_images
from hesig.attacks.vicious.detection import cosine_similarity, vicious_likelihood
from hesig.data import load_dataset
from hesig.core.errors import HesigError, InvalidValueError
from hesig.evaluation.metrics import dataset_psnr, psnr, ssim
from hesig.defenses.output import OutputDefense, parse_output_defense
from hesig.evaluation.risk import ReconstructionRisk



# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("text, expected", [("3/1", (3.0, 1.0)), ("0/1", (0.0, 1.0)), ("1/0", (1.0, 0.0)), (" 0.5/2 ", (0.5, 2.0))])
def test_parse_beta(text, expected):
    assert parse_beta(text) == expected


@pytest.mark.parametrize("text", ["3", "a/1", "1/2/3", "-1/1", "0/0", "nan/1", "inf/1", ""])
def test_parse_beta_rejects(text):
    with pytest.raises(InvalidValueError):
        parse_beta(text)


def test_release_modes():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(release(logits, "logits"), logits)
    assert torch.allclose(release(logits, "softmax").sum(1), torch.ones(1))
    with pytest.raises(InvalidValueError):
        release(logits, "probits")
    with pytest.raises(InvalidValueError):
        ViciousAttack("1/1", "sigmoid")


def test_constructor_validates():
    for kwargs in ({"epochs": 0}, {"lr": 0.0}, {"valid_fraction": 1.0}, {"huber_delta": 0.0},
                   {"ssim_weight": 0.0, "huber_weight": 0.0}):
        with pytest.raises(InvalidValueError):
            ViciousAttack("1/1", **kwargs)


def test_labels_are_required():
    x = torch.rand(20, 1, 8, 8)
    with pytest.raises(InvalidValueError, match="no labels"):
        check_labelled(x, None)
    with pytest.raises(InvalidValueError, match="fewer than two classes"):
        check_labelled(x, torch.zeros(20, dtype=torch.long))
    with pytest.raises(InvalidValueError, match="integer"):
        check_labelled(x, torch.rand(20))
    with pytest.raises(InvalidValueError, match="lie in"):
        check_labelled(x, torch.arange(20), num_classes=10)
    with pytest.raises(InvalidValueError):
        ViciousAttack("1/1", epochs=1).fit(LabelledData(x, None))


@pytest.mark.parametrize("shape", [(3, 1, 32, 32), (2, 3, 16, 16), (2, 1, 8, 8)])
def test_training_ssim_equals_reported_full_map_ssim(shape):
    from hesig.evaluation.metrics import ssim_full_map
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(*shape, generator=gen)
    r = (x + 0.2 * torch.randn(*shape, generator=gen)).clamp(0, 1)
    assert float(differentiable_ssim(r, x)) == pytest.approx(float(ssim_full_map(r, x).mean()), abs=1e-5)


def test_reconstruction_loss_matches_eq3():
    torch.manual_seed(0)
    x, r = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    huber_only = ReconstructionLoss(ssim_weight=0.0, huber_weight=3.0, huber_delta=1.0)(r, x)
    assert torch.isclose(huber_only, 3.0 * torch.nn.functional.huber_loss(r, x, delta=1.0))
    assert ReconstructionLoss()(x, x).abs() < 1e-5  # perfect reconstruction: 15 (1 - 1) + 3 * 0


# ---------------------------------------------------------------- risk R (eq. 6)

def _axis_dataset(mu, scales):
    """Rows mu +- a_i e_i: mean exactly mu, covariance exactly diag(2 a_i^2 / (N - 1))."""
    d = len(mu)
    rows = []
    for i, a in enumerate(scales):
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = a
        rows += [mu + e, mu - e]
    x = torch.stack(rows)
    return x, torch.tensor([2 * a * a / (len(x) - 1) for a in scales], dtype=torch.float64)


def test_risk_closed_form_diagonal():
    mu = torch.tensor([0.5, 0.4, 0.6, 0.5], dtype=torch.float64)
    x, var = _axis_dataset(mu, [0.1, 0.2, 0.3, 0.05])
    risk = ReconstructionRisk.fit(x.float().reshape(-1, 1, 2, 2))
    assert torch.allclose(risk.mean, mu, atol=1e-6)
    target = (mu + torch.tensor([0.1, -0.2, 0.0, 0.05], dtype=torch.float64)).float().reshape(1, 1, 2, 2)
    recon = (mu + torch.tensor([0.05, -0.2, 0.0, 0.0], dtype=torch.float64)).float().reshape(1, 1, 2, 2)
    t, rc = target.double().reshape(-1), recon.double().reshape(-1)
    d_mean = torch.sqrt(((t - mu) ** 2 / var).sum())
    d_rec = torch.sqrt(((t - rc) ** 2 / var).sum())
    assert risk.score(recon, target) == pytest.approx(float(d_mean / d_rec), rel=1e-4)


def test_risk_pinv_ignores_constant_pixels_and_shrinkage_closed_form():
    mu = torch.tensor([0.5, 0.0, 0.6, 0.5], dtype=torch.float64)
    x, var = _axis_dataset(mu, [0.1, 0.0, 0.3, 0.05])  # pixel 1 never varies (a black corner)
    images = x.float().reshape(-1, 1, 2, 2)
    target = (mu + torch.tensor([0.1, 0.0, 0.3, 0.0], dtype=torch.float64)).float().reshape(1, 1, 2, 2)
    pinv = ReconstructionRisk.fit(images, "pinv")
    keep = var > 0
    expected = torch.sqrt(((target.double().reshape(-1) - mu)[keep] ** 2 / var[keep]).sum())
    assert float(pinv.mahalanobis(target, pinv.mean)) == pytest.approx(float(expected), rel=1e-4)
    shrunk = ReconstructionRisk.fit(images, "shrinkage", shrinkage=0.5)
    reg = var + 0.5 * var.sum() / 4
    expected = torch.sqrt(((target.double().reshape(-1) - mu) ** 2 / reg).sum())
    assert float(shrunk.mahalanobis(target, shrunk.mean)) == pytest.approx(float(expected), rel=1e-4)


def test_risk_full_covariance_matches_scipy_and_identity_is_euclidean():
    gen = torch.Generator().manual_seed(3)
    mix = torch.randn(6, 6, generator=gen, dtype=torch.float64) * 0.1
    x = (torch.rand(500, 6, generator=gen, dtype=torch.float64) @ mix.T * 0.3 + 0.5).clamp(0, 1)
    risk = ReconstructionRisk.fit(x.float().reshape(-1, 1, 2, 3))
    cov = np.cov(x.float().double().numpy(), rowvar=False)
    a, b = x[:3].float(), x[3:6].float()
    ours = risk.mahalanobis(a.reshape(3, 1, 2, 3), b.reshape(3, 1, 2, 3))
    theirs = [scipy_mahalanobis(a[i].double().numpy(), b[i].double().numpy(), np.linalg.inv(cov)) for i in range(3)]
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5)
    eye = ReconstructionRisk(torch.zeros(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64), "pinv", 0.0)
    assert torch.allclose(eye.mahalanobis(a, b), (a.double() - b.double()).norm(dim=1))
    with pytest.raises(InvalidValueError):
        ReconstructionRisk.fit(x.float().reshape(-1, 1, 2, 3), "ledoit")
    with pytest.raises(HesigError):
        risk.mahalanobis(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))


# ---------------------------------------------------------------- metrics conventions

def test_ssim_matches_scikit_image_and_dataset_psnr_is_pooled():
    from skimage.metrics import structural_similarity
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 32, 32, generator=gen)
    r = (x + 0.1 * torch.randn(3, 1, 32, 32, generator=gen)).clamp(0, 1)
    ours = ssim(r, x)
    for i in range(3):
        ref = structural_similarity(x[i, 0].double().numpy(), r[i, 0].double().numpy(), data_range=1.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-4)
    pooled = dataset_psnr(r, x)
    assert pooled == pytest.approx(10 * np.log10(1 / float(((r - x) ** 2).mean())), rel=1e-6)
    r2 = r.clone()
    r2[0] = 1 - x[0]  # one bad image drags the pooled PSNR far below the per-image mean
    assert dataset_psnr(r2, x) < float(psnr(r2, x).mean())


# ---------------------------------------------------------------- Algorithm 1 on the bundled digits

@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return train, test, resize_images(train.images, 16), resize_images(test.images, 16)


@pytest.fixture(scope="module")
def trained(digits):
    train, _, x_train, _ = digits
    torch.set_num_threads(1)
    data = LabelledData(x_train, train.labels, train.num_classes)
    vicious = ViciousAttack("3/1", "logits", epochs=15, batch_size=64, lr=3e-3, seed=0, progress=False).fit(data).model
    honest = ViciousAttack("0/1", "logits", epochs=15, batch_size=64, lr=3e-3, seed=0, progress=False).fit(data).model
    return vicious, honest


def test_vicious_training_reconstructs_and_classifies(digits, trained):
    train, test, x_train, x_test = digits
    vicious, honest = trained
    released = vicious.outputs(x_test)
    assert released.shape == (len(x_test), 10)
    acc = float((released.argmax(1) == test.labels).float().mean())
    assert acc > 0.8
    recon = vicious.reconstruct(released)
    assert recon.shape == x_test.shape and recon.min() >= 0 and recon.max() <= 1
    mean_image = x_train.mean(0, keepdim=True).expand_as(x_test)
    assert float(psnr(recon, x_test).mean()) > float(psnr(mean_image, x_test).mean()) + 2.0
    risk = ReconstructionRisk.fit(x_train, "pinv")
    assert risk.score(recon, x_test) > risk.score(mean_image, x_test)
    # model selection: the kept epoch is the one with the lowest validation objective (eq. 4)
    objectives = [h["valid_objective"] for h in vicious.history]
    assert vicious.best_epoch == int(np.argmin(objectives)) + 1 or objectives[vicious.best_epoch - 1] == min(objectives)
    assert honest.decoder is None and float((honest.outputs(x_test).argmax(1) == test.labels).float().mean()) > 0.8
    with pytest.raises(InvalidValueError, match="honest"):
        honest.reconstruct(honest.outputs(x_test[:2]))
    with pytest.raises(HesigError):
        vicious.reconstruct(torch.full((2, 10), float("nan")))
    with pytest.raises(HesigError):
        vicious.reconstruct(torch.zeros(2, 7))


def test_same_seed_same_model(digits):
    train, _, x_train, _ = digits
    data = LabelledData(x_train[:400], train.labels[:400], 10)
    a = ViciousAttack("1/1", "softmax", epochs=1, batch_size=128, seed=5, progress=False).fit(data).model
    b = ViciousAttack("1/1", "softmax", epochs=1, batch_size=128, seed=5, progress=False).fit(data).model
    for (ka, va), (kb, vb) in zip(a.classifier.state_dict().items(), b.classifier.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_detection_statistic(digits, trained):
    _, test, _, x_test = digits
    vicious, _ = trained
    before = {k: v.clone() for k, v in vicious.classifier.state_dict().items()}
    res = vicious_likelihood(vicious.classifier, x_test[100:200], test.labels[100:200], x_test[:100], rounds=3, seed=0)
    assert len(res["cosine_by_round"]) == 3 and -1 <= res["cosine"] <= 1
    assert res["v"] == pytest.approx((1 - res["cosine"]) / 2)
    assert all(torch.equal(before[k], v) for k, v in vicious.classifier.state_dict().items())  # F itself untouched
    y = torch.randn(5, 4)
    assert cosine_similarity(y, 3 * y) == pytest.approx(1.0) and cosine_similarity(y, -y) == pytest.approx(-1.0)
    with pytest.raises(InvalidValueError):
        vicious_likelihood(vicious.classifier, x_test[:2], test.labels[:2], x_test[:2], rounds=0)


# ---------------------------------------------------------------- output defenses

def test_output_defenses():
    y = torch.tensor([[0.123456, 2.5, -1.0, 0.7], [3.0, 0.2, 0.1, -0.4]])
    assert torch.allclose(OutputDefense("round", 2).apply(y)[0, 0], torch.tensor(0.12))
    top2 = OutputDefense("topk", 2).apply(y)
    assert (top2 != 0).sum(1).tolist() == [2, 2] and torch.equal(top2.argmax(1), y.argmax(1))
    onehot = OutputDefense("argmax").apply(y)
    assert onehot.sum(1).tolist() == [1.0, 1.0] and torch.equal(onehot.argmax(1), y.argmax(1))
    n1, n2 = OutputDefense("noise", 0.1).apply(y, seed=3), OutputDefense("noise", 0.1).apply(y, seed=3)
    assert torch.equal(n1, n2) and not torch.equal(n1, y)
    assert torch.equal(OutputDefense("none").apply(y), y)
    assert parse_output_defense("round:3") == OutputDefense("round", 3.0)
    assert parse_output_defense("argmax").kind == "argmax"
    for bad in ("round:1.5", "noise:-1", "topk:0", "clip:1", "argmax:2", "noise:x"):
        with pytest.raises(InvalidValueError):
            parse_output_defense(bad)


# ---------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def vicious_runs(tmp_path_factory):
    ws = tmp_path_factory.mktemp("vicious")
    common = ["--dataset", "digits", "--image-size", "8", "--epochs", "6", "--batch-size", "64", "--quiet"]
    for name, beta in (("honest", "0/1"), ("vicious", "3/1")):
        code = _cli(["attack", "vicious", "--beta", beta, "--out", ws / name, *common])
        assert code == 0
    return ws


def _cli(argv):
    from hesig.cli import main
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


def test_cli_attack_vicious_writes_run_and_resumes(cli, vicious_runs):
    metrics = json.loads((vicious_runs / "vicious" / "metrics.json").read_text())
    for key in ("psnr_mean", "psnr_dataset", "ssim_mean", "ssim_full_map_mean", "risk_R", "accuracy"):
        assert key in metrics["test"]
    assert metrics["queries"] == 450 and metrics["model_hash"] and metrics["train_split_hash"]
    assert (vicious_runs / "vicious" / "reconstructions.png").exists()
    honest = json.loads((vicious_runs / "honest" / "metrics.json").read_text())
    assert "psnr_mean" not in honest["test"] and not (vicious_runs / "honest" / "decoder.safetensors").exists()
    code, out, _ = cli.run("attack", "vicious", "--beta", "3/1", "--out", vicious_runs / "vicious", "--dataset", "digits",
                       "--image-size", "8", "--epochs", "6", "--batch-size", "64", "--quiet")
    assert code == 0 and json.loads(out)["resumed"] is True
    code, _, err = cli.run("attack", "vicious", "--beta", "1/1", "--out", vicious_runs / "vicious", "--dataset", "digits",
                       "--image-size", "8", "--epochs", "6", "--batch-size", "64", "--quiet")
    cli.assert_error(code, err, "another configuration")


def test_cli_detect_and_defenses(cli, vicious_runs, tmp_path):
    code, out, err = cli.run("detect-vicious", vicious_runs / "honest", vicious_runs / "vicious", "--out", tmp_path / "det",
                         "--finetune-size", "50", "--probe-size", "100", "--rounds", "3", "--draws", "2", "--quiet")
    assert code == 0, err
    det = json.loads((tmp_path / "det" / "detection.json").read_text())
    assert len(det["rows"]) == 4 and 0 <= det["roc"]["all"]["auc"] <= 1
    assert (tmp_path / "det" / "detection.png").exists()
    code, out, err = cli.run("output-defenses", "--run", vicious_runs / "vicious", "--out", tmp_path / "def",
                         "--defense", "none", "--defense", "round:0", "--defense", "argmax", "--adapt-epochs", "1", "--quiet")
    assert code == 0, err
    rows = json.loads((tmp_path / "def" / "defenses.json").read_text())["rows"]
    assert [r["defense"] for r in rows] == ["none", "round:0", "argmax"] and "adaptive" in rows[2]
    none = rows[0]
    assert none["fixed"]["psnr_mean"] > rows[2]["fixed"]["psnr_mean"]  # a one-hot leaks less than the logits


def test_cli_vicious_bad_input(cli, vicious_runs, tmp_path):
    code, _, err = cli.run("attack", "vicious", "--beta", "three/1", "--out", tmp_path / "x")
    cli.assert_error(code, err, "beta")
    code, _, err = cli.run("attack", "vicious", "--release", "probits", "--out", tmp_path / "x")
    cli.assert_error(code, err, "probits")
    code, _, err = cli.run("attack", "vicious", "--dataset", "digits", "--image-size", "12", "--out", tmp_path / "x")
    cli.assert_error(code, err, "multiple of 8")
    code, _, err = cli.run("output-defenses", "--run", vicious_runs / "honest", "--out", tmp_path / "d", "--defense", "argmax")
    cli.assert_error(code, err, "honest")
    code, _, err = cli.run("output-defenses", "--run", vicious_runs / "vicious", "--out", tmp_path / "d", "--defense", "blur:2")
    cli.assert_error(code, err, "blur:2")
    code, _, err = cli.run("detect-vicious", tmp_path / "nowhere", "--out", tmp_path / "d")
    cli.assert_error(code, err)
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(vicious_runs / "vicious", broken)
    data = (broken / "decoder.safetensors").read_bytes()
    (broken / "decoder.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = cli.run("output-defenses", "--run", broken, "--out", tmp_path / "d", "--defense", "argmax")
    cli.assert_error(code, err, "decoder")


def test_risk_cache_reuses_the_fit_for_the_same_split_only(tmp_path, monkeypatch, digits):
    from hesig.jobs.vicious import fitted_risk
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    train, _, x_train, _ = digits
    first = fitted_risk(train, x_train, "pinv")
    assert len(list((tmp_path / "hesig" / "risk").glob("*.safetensors"))) == 1
    again = fitted_risk(train, x_train, "pinv")
    assert torch.equal(first.precision, again.precision) and torch.equal(first.mean, again.mean)
    other = train.subset(slice(0, 500))
    fitted_risk(other, x_train[:500], "pinv")
    assert len(list((tmp_path / "hesig" / "risk").glob("*.safetensors"))) == 2
    entry = next((tmp_path / "hesig" / "risk").glob("*.safetensors"))
    entry.write_bytes(b"garbage")  # a damaged entry is refitted, not trusted
    assert fitted_risk(train, x_train, "pinv").precision.shape == first.precision.shape


# ---------------------------------------------------------------- the attack protocol and the run store

def test_vicious_attack_follows_the_protocol(digits):
    from hesig.attacks.base import Reconstruction, WhiteBoxEdge
    train, _, x_train, x_test = digits
    attack = ViciousAttack("3/1", "logits", epochs=1, batch_size=64, seed=0, progress=False)
    with pytest.raises(InvalidValueError, match="not trained"):
        attack.reconstruct(torch.zeros(2, 10))
    attack.fit(LabelledData(x_train[:300], train.labels[:300], 10))
    result = attack.reconstruct(attack.model.outputs(x_test[:7]))
    assert isinstance(result, Reconstruction) and result.images.shape == (7, *x_test.shape[1:])
    assert result.queries == 0 and result.images.dtype == torch.float32
    with pytest.raises(InvalidValueError, match="receives LabelledData, not WhiteBoxEdge") as info:
        attack.fit(WhiteBoxEdge(torch.nn.Identity(), (1, 16, 16)))
    assert "\n" not in str(info.value)


def test_train_vicious_job_resumes_each_step_and_refuses_other_settings(tmp_path):
    from hesig.core.errors import MismatchError
    from hesig.jobs.vicious import train_vicious_job
    common = dict(epochs=1, batch_size=64, image_size=8, ngf=4, train_limit=200, device="cpu", progress=False)
    first = train_vicious_job("digits", "3/1", "logits", tmp_path, **common)
    assert first["resumed"] is False and json.loads((tmp_path / "run.json").read_text())["kind"] == "vicious"
    again = train_vicious_job("digits", "3/1", "logits", tmp_path, **common)
    assert again["resumed"] is True and again["test"] == first["test"]
    # killed after training, before evaluation: the model is reused, only the evaluation reruns
    (tmp_path / "steps" / "evaluate.json").unlink()
    stamp = (tmp_path / "model" / "model.safetensors").stat().st_mtime_ns
    third = train_vicious_job("digits", "3/1", "logits", tmp_path, **common)
    assert third["resumed"] is False and third["test"] == first["test"]
    assert (tmp_path / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(MismatchError, match="another configuration"):
        train_vicious_job("digits", "1/1", "logits", tmp_path, **common)
    with pytest.raises(InvalidValueError, match="multiple of 8"):
        train_vicious_job("digits", "3/1", "logits", tmp_path / "bad", **{**common, "image_size": 12})
    assert not (tmp_path / "bad" / "run.json").exists()  # refused before anything is pinned
