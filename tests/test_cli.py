"""End-to-end CLI runs on the bundled digits, and every bad input the foundation issue lists.

A bad input must end in one line on stderr, a non-zero exit, no traceback, and must not destroy
anything already computed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from hesig.jobs.fingerprint import store_dir as chunk_dir
from hesig.signature.fingerprints import Fingerprints
from hesig.core.io import load_tensors, save_tensors


def test_pipeline_artifacts_and_hashes(workspace, cli):
    code, out, err = cli.run("reconstruct", "--decoder", workspace / "decoder", "--fingerprints",
                         workspace / "fp_test.safetensors", "--classifier", workspace / "evaluator",
                         "--out", workspace / "rec")
    assert code == 0, err
    metrics = json.loads((workspace / "rec" / "metrics.json").read_text())
    assert metrics["metrics"]["data_range"] == 1.0
    assert {"attack", "baseline_mean_image", "baseline_class_mean"} <= set(metrics["metrics"])
    assert metrics["fingerprints"]["queries_per_fingerprint_mean"] > 24  # at least the coarse pass per direction
    model_meta = json.loads((workspace / "model" / "model.json").read_text())
    assert metrics["identity"]["model_hash"] == model_meta["model_hash"]
    for fig in ("fig2_reconstructions.png", "fig3_single_class.png", "signatures.png"):
        assert (workspace / "rec" / fig).read_bytes()[:4] == b"\x89PNG"
    fp = Fingerprints.load(workspace / "fp_test.safetensors")
    assert fp.eps.shape == (120, 24) and fp.meta["split"] == "test"
    assert torch.equal(fp.indices, torch.arange(120))


def test_same_seed_same_fingerprints(workspace, cli, tmp_path):
    code, _, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
                       "--dataset", "digits", "--split", "test", "--indices", "0:120", "--out", tmp_path / "again.safetensors", "--quiet")
    assert code == 0, err
    a, b = Fingerprints.load(workspace / "fp_test.safetensors"), Fingerprints.load(tmp_path / "again.safetensors")
    assert torch.equal(a.eps, b.eps) and torch.equal(a.queries, b.queries)


def test_missing_data_root(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no mirror from earlier runs either
    code, _, err = cli.run("train-model", "--dataset", "mnist", "--data-root", tmp_path / "nowhere", "--out", tmp_path / "m")
    cli.assert_error(code, err, "HESIG_DATA", "--download")


@pytest.mark.parametrize("argv, fragment", [
    (["train-model", "--dataset", "imagenet", "--out", "x"], "--dataset"),
    (["train-model", "--arch", "resnet", "--out", "x"], "--arch"),
    (["fingerprint", "--oracle", "magic", "--model", "m", "--directions", "d", "--out", "o"], "--oracle"),
    (["directions", "--family", "psychic", "--out", "x"], "--family"),
    (["fingerprint", "--points-per-round", "lots", "--model", "m", "--directions", "d", "--out", "o"], "--points-per-round"),
])
def test_unknown_option_values(cli, argv, fragment):
    code, _, err = cli.run(*argv)
    cli.assert_error(code, err, fragment)


def test_corrupt_checkpoint(workspace, cli, tmp_path):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 50)
    code, _, err = cli.run("fingerprint", "--model", bad, "--directions", workspace / "dirs.safetensors",
                       "--dataset", "digits", "--out", tmp_path / "fp.safetensors")
    cli.assert_error(code, err, "corrupt")


def test_tampered_weights_fail_the_hash_check(workspace, cli, tmp_path):
    tensors, meta = load_tensors(workspace / "model" / "model.safetensors")
    tensors["fc1.weight"] = tensors["fc1.weight"] + 0.01
    (tmp_path / "m").mkdir()
    save_tensors(tmp_path / "m" / "model.safetensors", tensors, meta)
    code, _, err = cli.run("fingerprint", "--model", tmp_path / "m", "--directions", workspace / "dirs.safetensors",
                       "--dataset", "digits", "--out", tmp_path / "fp.safetensors")
    cli.assert_error(code, err, "hash")


def test_directions_of_the_wrong_shape(workspace, cli, tmp_path):
    from hesig.signature.directions import make_directions
    make_directions("random", 5, (1, 28, 28)).save(tmp_path / "mnist_dirs.safetensors")
    code, _, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", tmp_path / "mnist_dirs.safetensors",
                       "--dataset", "digits", "--out", tmp_path / "fp.safetensors")
    cli.assert_error(code, err, "directions have shape")


@pytest.mark.parametrize("model, directions, fragment", [
    ("model", "dirs_other.safetensors", "directions hash"),
    ("evaluator", "dirs.safetensors", "model hash"),
])
def test_decoder_refuses_fingerprints_of_another_model_or_directions_set(workspace, cli, tmp_path, model, directions, fragment):
    code, _, err = cli.run("fingerprint", "--model", workspace / model, "--directions", workspace / directions,
                       "--dataset", "digits", "--split", "test", "--indices", "0:20", "--out", tmp_path / "fp.safetensors", "--quiet")
    assert code == 0, err
    code, _, err = cli.run("reconstruct", "--decoder", workspace / "decoder", "--fingerprints", tmp_path / "fp.safetensors",
                       "--out", tmp_path / "rec")
    cli.assert_error(code, err, fragment)


def test_nan_in_fingerprints(workspace, cli, tmp_path):
    tensors, meta = load_tensors(workspace / "fp_test.safetensors")
    tensors["eps"][0, 0] = math.nan
    save_tensors(tmp_path / "nan.safetensors", tensors, meta)
    code, _, err = cli.run("reconstruct", "--decoder", workspace / "decoder", "--fingerprints", tmp_path / "nan.safetensors",
                       "--out", tmp_path / "rec")
    cli.assert_error(code, err, "NaN")


def test_output_path_that_cannot_be_written(workspace, cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, _, err = cli.run("train-model", "--dataset", "digits", "--arch", "mlp", "--out", blocker / "model")
    cli.assert_error(code, err, "cannot write")


def test_evaluator_must_be_independent(workspace, cli, tmp_path):
    code, _, err = cli.run("reconstruct", "--decoder", workspace / "decoder", "--fingerprints", workspace / "fp_test.safetensors",
                       "--classifier", workspace / "model", "--out", tmp_path / "rec")
    cli.assert_error(code, err, "independently")


def test_exhausted_budget_keeps_finished_chunks_and_resumes(workspace, cli, tmp_path):
    common = ["fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors", "--dataset", "digits",
              "--split", "test", "--indices", "0:120", "--chunk-size", "40", "--quiet"]
    out = tmp_path / "fp.safetensors"
    fresh = Fingerprints.load(workspace / "fp_test.safetensors")
    budget = int(fresh.queries[:40].sum() + fresh.queries[40:80].sum() // 2)  # one and a half chunks
    code, _, err = cli.run(*common, "--out", out, "--budget", budget)
    cli.assert_error(code, err, "budget", "resumes", exit_code=3)
    chunks = sorted(chunk_dir(out).glob("chunk-*.safetensors"))
    assert len(chunks) == 1 and not out.exists()
    code, _, err = cli.run(*common, "--out", out)
    assert code == 0, err
    resumed = Fingerprints.load(out)
    assert torch.equal(resumed.eps, fresh.eps) and torch.equal(resumed.indices, fresh.indices)
    assert not chunk_dir(out).exists()


def test_resume_refuses_chunks_of_another_job(workspace, cli, tmp_path):
    common = ["fingerprint", "--model", workspace / "model", "--dataset", "digits", "--split", "test", "--indices", "0:80",
              "--chunk-size", "40", "--quiet", "--out", tmp_path / "fp.safetensors"]
    fresh = Fingerprints.load(workspace / "fp_test.safetensors")
    budget = int(fresh.queries[:40].sum() + fresh.queries[40:80].sum() // 2)
    code, _, err = cli.run(*common, "--directions", workspace / "dirs.safetensors", "--budget", budget)
    assert code == 3, err
    code, _, err = cli.run(*common, "--directions", workspace / "dirs_other.safetensors")
    cli.assert_error(code, err, "another configuration")


def test_rerunning_a_finished_job_is_a_no_op(workspace, cli):
    out = workspace / "fp_test.safetensors"
    before = out.stat().st_mtime_ns
    code, stdout, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
                            "--dataset", "digits", "--split", "test", "--indices", "0:120", "--out", out, "--quiet")
    assert code == 0, err
    assert out.stat().st_mtime_ns == before and not chunk_dir(out).exists()
    assert json.loads(stdout)["n"] == 120


def test_corrupt_job_manifest_is_one_line(workspace, cli, tmp_path):
    out = tmp_path / "fp.safetensors"
    chunk_dir(out).mkdir()
    (chunk_dir(out) / "run.json").write_text("{truncated")
    code, _, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
                       "--dataset", "digits", "--split", "test", "--indices", "0:20", "--out", out, "--quiet")
    cli.assert_error(code, err, "unreadable")


def test_ckks_oracle_refuses_a_non_polynomial_model(cli, workspace, tmp_path):
    code, _, err = cli.run("fingerprint", "--oracle", "ckks", "--model", workspace / "model", "--directions",
                       workspace / "dirs.safetensors", "--dataset", "digits", "--indices", "0:2",
                       "--out", tmp_path / "fp.safetensors", "--quiet")
    cli.assert_error(code, err, "CKKS oracle evaluates", "mlp")
    assert not (tmp_path / "fp.safetensors").exists()


def test_ckks_params_prints_parameters_depth_and_security(cli):
    code, out, _ = cli.run("ckks-params")
    assert code == 0
    info = json.loads(out)
    assert info["security_bits"] == 128 and info["total_coeff_bits"] <= info["max_coeff_bits_for_128_bit_security"]
    assert info["depth_required"] <= info["depth_available"] and info["slots"] == 4096


def test_unknown_ckks_layout_is_one_line(cli, workspace, tmp_path):
    code, _, err = cli.run("fingerprint", "--oracle", "ckks", "--ckks-layout", "diagonal", "--model",
                       workspace / "model", "--directions", workspace / "dirs.safetensors", "--out", tmp_path / "f.safetensors")
    cli.assert_error(code, err, "diagonal")


@pytest.mark.parametrize("argv, fragment", [
    (["directions", "--dataset", "digits", "--family", "pgd", "--count", "4"], "pass --model"),
    (["directions", "--dataset", "digits", "--family", "mix", "--count", "4"], "needs a mix"),
    (["directions", "--dataset", "digits", "--family", "mix", "--mix", "random:1,tarot:1", "--count", "4"],
     "unknown family 'tarot'"),
    (["directions", "--dataset", "digits", "--family", "random", "--mix", "random:1,pca:1", "--count", "4"],
     "only applies to --family mix"),
    (["directions", "--dataset", "digits", "--family", "pca", "--count", "65"], "at most 64 components"),
])
def test_bad_direction_requests(cli, tmp_path, argv, fragment):
    code, _, err = cli.run(*argv, "--out", tmp_path / "d.safetensors")
    cli.assert_error(code, err, fragment)
    assert not (tmp_path / "d.safetensors").exists()


def test_adversarial_directions_from_the_cli_record_model_and_data(workspace, cli, tmp_path):
    code, out, err = cli.run("directions", "--dataset", "digits", "--family", "uap", "--count", "12",
                         "--model", workspace / "model", "--out", tmp_path / "uap.safetensors")
    assert code == 0, err
    from hesig.signature.directions import Directions
    from hesig.models import load_model
    dirs = Directions.load(tmp_path / "uap.safetensors")
    assert dirs.family == "uap" and dirs.count == 12
    assert dirs.params["model_hash"] == load_model(workspace / "model").hash and dirs.params["split_hash"]


def test_direction_study_runs_resumes_and_refuses_other_settings(workspace, cli, tmp_path):
    common = ["study-directions", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "study",
              "--families", "random,centroid,mix", "--mix", "random:1,centroid:1", "--counts", "4,12",
              "--n-train", "400", "--n-test", "60", "--decoder-epochs", "2",
              "--model-from", workspace / "model", "--evaluator-from", workspace / "evaluator", "--quiet"]
    code, out, err = cli.run(*common)
    assert code == 0, err
    from hesig.jobs.study import collect_cells
    cells = collect_cells(tmp_path / "study")
    assert len(cells) == 6
    for cell in cells:
        assert cell["n_test"] == 60 and 0 <= cell["ssim"] <= 1 and cell["class_recovery"] is not None
        assert cell["queries_per_fingerprint"] > cell["count"]  # several queries per direction
        assert cell["hashes"]["model"] and cell["hashes"]["directions"] != cell["hashes"]["directions_full"] or cell["count"] == 12
    by = {(c["family"], c["count"]): c for c in cells}
    assert by[("random", 12)]["queries_per_fingerprint"] > by[("random", 4)]["queries_per_fingerprint"]
    # A rerun reuses every artifact (no new cells, same numbers) ...
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "study" / "steps").glob("cell-*.json")}
    code, _, err = cli.run(*common)
    assert code == 0 and "fingerprints" not in err
    assert len(stamp) == 6
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "study" / "steps").glob("cell-*.json")}
    # ... and another setting in the same folder is refused in one line.
    code, _, err = cli.run(*[a if a != "400" else "300" for a in common])
    cli.assert_error(code, err, "another --out")
    code, _, err = cli.run(*common[:-1], "--precisions", "8:2")
    cli.assert_error(code, err, "precision")


def test_direction_study_with_residual_decoders(workspace, cli, tmp_path):
    """--decoder-res 1: every cell's decoder has one residual block, and the cell says so; the
    setting is part of the study's identity (another value in the same folder is refused)."""
    common = ["study-directions", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "study",
              "--families", "random", "--counts", "6", "--precisions", "1:0.3", "--n-train", "200", "--n-test", "30",
              "--decoder-epochs", "1", "--model-from", workspace / "model", "--evaluator-from", workspace / "evaluator",
              "--quiet"]
    code, _, err = cli.run(*common, "--decoder-res", "1")
    assert code == 0, err
    from hesig.jobs.study import collect_cells
    (cell,) = collect_cells(tmp_path / "study")
    assert cell["decoder"]["res"] == 1 and 0 <= cell["ssim"] <= 1
    code, _, err = cli.run(*common, "--decoder-res", "2")
    cli.assert_error(code, err, "another --out")
    code, _, err = cli.run(*common, "--decoder-res", "9")
    cli.assert_error(code, err, "--decoder-res")


def test_direction_study_with_the_prior_guided_search(workspace, cli, tmp_path):
    """precision prior:M: the owner's prior is fingerprinted once, every pair costs exactly M queries."""
    code, _, err = cli.run("study-directions", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "study",
                           "--families", "random", "--counts", "6,12", "--precisions", "prior:1,prior:2,1:0.3",
                           "--n-train", "300", "--n-test", "40", "--decoder-epochs", "2", "--model-from", workspace / "model",
                           "--evaluator-from", workspace / "evaluator", "--quiet")
    assert code == 0, err
    from hesig.jobs.study import collect_cells
    cells = collect_cells(tmp_path / "study")
    assert len(cells) == 6 and [c["search"] for c in cells] == ["bisection"] * 2 + ["prior"] * 4
    for cell in cells[2:]:
        assert cell["queries_per_fingerprint"] == cell["count"] * cell["rtol"]  # exactly M per pair
    prior = Fingerprints.load(tmp_path / "study" / "random" / "fp_prior.safetensors")
    assert prior.meta["split"] == "train" and prior.meta["search"]["rtol"] == 0.01


def test_prior_guided_fingerprints_end_to_end(workspace, cli, tmp_path):
    """The owner's train-split fingerprints as the prior: exactly M queries per pair, the prior's
    provenance in the file, a decoder trains on them, and rerunning is a no-op (same bytes)."""
    common = ["fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
              "--dataset", "digits", "--prior", workspace / "fp_train.safetensors", "--prior-steps", "2", "--quiet"]
    code, _, err = cli.run(*common, "--split", "train", "--out", tmp_path / "train.safetensors")
    assert code == 0, err
    code, _, err = cli.run(*common, "--split", "test", "--indices", "0:120", "--out", tmp_path / "test.safetensors")
    assert code == 0, err
    fp = Fingerprints.load(tmp_path / "test.safetensors")
    assert (fp.queries == 2).all()
    search = fp.meta["search"]
    assert search["kind"] == "prior" and search["steps"] == 2 and search["prior"]["split"] == "train"
    before = (tmp_path / "test.safetensors").read_bytes()
    code, _, err = cli.run(*common, "--split", "test", "--indices", "0:120", "--out", tmp_path / "test.safetensors")
    assert code == 0, err and (tmp_path / "test.safetensors").read_bytes() == before
    code, _, err = cli.run("train-decoder", "--fingerprints", tmp_path / "train.safetensors", "--out", tmp_path / "dec",
                           "--epochs", "2", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("prior, steps, fragment", [
    ("fp_test.safetensors", "1", "test split"),            # the victims' own inputs
    ("fp_train.safetensors", None, "both a prior"),       # --prior without --prior-steps
    (None, "2", "both a prior"),
    ("fp_train.safetensors", "12", "at least 4096 rows"),  # 2^12 knots from ~1,400 rows
    ("dirs.safetensors", "1", "dirs.safetensors: metadata field"),  # not a fingerprint file
])
def test_prior_guided_fingerprints_refuse_bad_priors(workspace, cli, tmp_path, prior, steps, fragment):
    argv = ["fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
            "--dataset", "digits", "--split", "test", "--indices", "0:20", "--out", tmp_path / "fp.safetensors", "--quiet"]
    argv += ["--prior", workspace / prior] if prior else []
    argv += ["--prior-steps", steps] if steps else []
    code, _, err = cli.run(*argv)
    cli.assert_error(code, err, fragment)
    assert not (tmp_path / "fp.safetensors").exists()


def test_prior_of_other_directions_is_refused(workspace, cli, tmp_path):
    code, _, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs_other.safetensors",
                           "--dataset", "digits", "--split", "test", "--indices", "0:20", "--out", tmp_path / "fp.safetensors",
                           "--prior", workspace / "fp_train.safetensors", "--prior-steps", "1", "--quiet")
    cli.assert_error(code, err, "directions hash")


def test_decoder_with_rank_features_and_the_metric_loss(workspace, cli, tmp_path):
    code, _, err = cli.run("train-decoder", "--fingerprints", workspace / "fp_train.safetensors", "--out", tmp_path / "dec",
                           "--epochs", "2", "--features", "rank", "--loss", "ssim-l1", "--quiet")
    assert code == 0, err
    meta = json.loads((tmp_path / "dec" / "decoder.json").read_text())
    assert meta["features"] == "rank" and meta["loss"] == "ssim-l1"
    code, _, err = cli.run("reconstruct", "--decoder", tmp_path / "dec", "--fingerprints", workspace / "fp_test.safetensors",
                           "--out", tmp_path / "rec")
    assert code == 0, err
    assert 0 <= json.loads((tmp_path / "rec" / "metrics.json").read_text())["metrics"]["attack"]["ssim_mean"] <= 1


def test_decoder_with_residual_blocks(workspace, cli, tmp_path):
    """--res 2: two residual blocks at full resolution, recorded in the checkpoint and its job, reloaded
    as such, and used by reconstruct."""
    code, _, err = cli.run("train-decoder", "--fingerprints", workspace / "fp_train.safetensors", "--out", tmp_path / "dec",
                           "--epochs", "1", "--res", "2", "--quiet")
    assert code == 0, err
    meta = json.loads((tmp_path / "dec" / "decoder.json").read_text())
    assert meta["res"] == 2 and meta["job"]["res"] == 2 and "mlp" not in meta
    from hesig.signature.decoders import FingerprintDecoder
    assert len(FingerprintDecoder.load(tmp_path / "dec").network.refine) == 2
    code, _, err = cli.run("reconstruct", "--decoder", tmp_path / "dec", "--fingerprints", workspace / "fp_test.safetensors",
                           "--out", tmp_path / "rec")
    assert code == 0, err


def test_decoder_with_fully_connected_layers(workspace, cli, tmp_path):
    """--mlp 2: two hidden layers before the projection, recorded in the checkpoint and reloaded as such."""
    code, _, err = cli.run("train-decoder", "--fingerprints", workspace / "fp_train.safetensors", "--out", tmp_path / "dec",
                           "--epochs", "1", "--mlp", "2", "--quiet")
    assert code == 0, err
    meta = json.loads((tmp_path / "dec" / "decoder.json").read_text())
    assert meta["mlp"] == 2 and meta["mlp_width"] == 1024 and meta["job"]["mlp"] == 2
    from hesig.signature.decoders import FingerprintDecoder
    assert FingerprintDecoder.load(tmp_path / "dec").network.mlp == 2
    code, _, err = cli.run("reconstruct", "--decoder", tmp_path / "dec", "--fingerprints", workspace / "fp_test.safetensors",
                           "--out", tmp_path / "rec")
    assert code == 0, err
