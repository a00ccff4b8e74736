"""Bad input, as an attacker or a new user would give it: one clear line, a non-zero exit, no
traceback, and every earlier artifact byte-identical afterwards. Plus file modes, determinism,
truthful interrupt messages and bounded CKKS state.

Each case in CASES builds its hostile input in ``tmp_path`` (never in the shared workspace), runs
one command, and is checked the same way; the README's table "Bad input" lists them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from hesig.cli import _interrupted
from hesig.core.io import META_KEY, load_tensors, save_tensors
from hesig.signature.fingerprints import Fingerprints


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite_meta(src: Path, dst: Path, **changes) -> Path:
    """Copy a hesig safetensors file with metadata fields changed (None deletes a field); the
    tensors stay valid, so only the metadata is hostile."""
    tensors, meta = load_tensors(src)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    blob = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata={META_KEY: json.dumps(meta)})
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(blob)
    return dst


def _copy_model(ws: Path, dst: Path, **changes) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    _rewrite_meta(ws / "model" / "model.safetensors", dst / "model.safetensors", **changes)
    (dst / "model.json").write_text((ws / "model" / "model.json").read_text())
    return dst


def _fingerprints(ws: Path, dst: Path, *, tensors=None, **meta_changes) -> Path:
    fp = Fingerprints.load(ws / "fp_test.safetensors")
    data = {"eps": fp.eps, "censored": fp.censored.to(torch.uint8), "queries": fp.queries, "indices": fp.indices}
    data.update(tensors or {})
    meta = {**fp.meta, **meta_changes}
    save_tensors(dst, data, meta)
    return dst


def _directions(ws: Path, dst: Path, vectors=None, **meta_changes) -> Path:
    tensors, meta = load_tensors(ws / "dirs.safetensors")
    meta.update(meta_changes)
    save_tensors(dst, {"directions": tensors["directions"] if vectors is None else vectors}, meta)
    return dst


def _fp(ws, out, *extra):
    return ["fingerprint", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--dataset", "digits",
            "--split", "test", "--indices", "0:20", "--out", out, "--quiet", *extra]


def _rec(ws, fps, out, *extra):
    return ["reconstruct", "--decoder", ws / "decoder", "--fingerprints", fps, "--out", out, *extra]


def _train_decoder(fps, out):
    return ["train-decoder", "--fingerprints", fps, "--out", out, "--epochs", "1", "--quiet"]


# Each case: (id, build(ws, tmp) -> argv, fragment expected in the one error line).
CASES = [
    # -- outputs never destroy inputs ------------------------------------------------------------
    ("fingerprint out is the model checkpoint",
     lambda ws, t: _fp(ws, ws / "model" / "model.safetensors"), "outputs never replace inputs"),
    ("fingerprint out is the directions file",
     lambda ws, t: _fp(ws, ws / "dirs.safetensors"), "outputs never replace inputs"),
    ("fingerprint out is another job's fingerprints",
     lambda ws, t: _fp(ws, ws / "fp_train.safetensors"), "made by another job"),
    ("fingerprint out is a model file elsewhere",
     lambda ws, t: (_copy_model(ws, t / "m"), _fp(ws, t / "m" / "model.safetensors"))[1], "holds a model artifact, not a fingerprints artifact"),
    ("fingerprint out is a text file",
     lambda ws, t: ((t / "notes.txt").write_text("my notes"), _fp(ws, t / "notes.txt"))[1], "a file hesig did not write"),
    ("fingerprint out is a directory",
     lambda ws, t: ((t / "d").mkdir(), _fp(ws, t / "d"))[1], "is a directory"),
    ("fingerprint out is a symlink to the model",
     lambda ws, t: ((t / "link.safetensors").symlink_to(ws / "model" / "model.safetensors"),
                    _fp(ws, t / "link.safetensors"))[1], "outputs never replace inputs"),
    ("fingerprint with a prior made of the victims' test split",
     lambda ws, t: _fp(ws, t / "fp.safetensors") + ["--prior", ws / "fp_test.safetensors", "--prior-steps", "1"],
     "would read the victims' inputs"),
    ("fingerprint with a prior of another direction set",
     lambda ws, t: ["fingerprint", "--model", ws / "model", "--directions", ws / "dirs_other.safetensors", "--dataset",
                    "digits", "--split", "test", "--indices", "0:20", "--out", t / "fp.safetensors",
                    "--prior", ws / "fp_train.safetensors", "--prior-steps", "1"], "directions hash"),
    ("train-decoder with an unknown loss",
     lambda ws, t: ["train-decoder", "--fingerprints", ws / "fp_train.safetensors", "--out", t / "dec", "--loss", "lpips"],
     "--loss"),
    ("train-decoder with more fully connected layers than allowed",
     lambda ws, t: ["train-decoder", "--fingerprints", ws / "fp_train.safetensors", "--out", t / "dec", "--mlp", "9"],
     "--mlp"),
    ("train-decoder with more residual blocks than allowed",
     lambda ws, t: ["train-decoder", "--fingerprints", ws / "fp_train.safetensors", "--out", t / "dec", "--res", "9"],
     "--res"),
    ("directions out is the model file",
     lambda ws, t: ["directions", "--dataset", "digits", "--family", "fgsm", "--count", "4", "--model", ws / "model",
                    "--out", ws / "model" / "model.safetensors"], "outputs never replace inputs"),
    ("directions out holds another direction set",
     lambda ws, t: ["directions", "--dataset", "digits", "--count", "24", "--seed", "5", "--out", ws / "dirs.safetensors"],
     "made by another job"),
    ("directions out holds fingerprints",
     lambda ws, t: ["directions", "--dataset", "digits", "--count", "4", "--out", ws / "fp_test.safetensors"],
     "holds a fingerprints artifact, not a directions artifact"),
    ("train-model out holds another model",
     lambda ws, t: ["train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--out", ws / "model",
                    "--quiet"], "made by another job"),
    ("train-decoder out holds another decoder",
     lambda ws, t: _train_decoder(ws / "fp_train.safetensors", ws / "decoder"), "made by another job"),
    ("reconstruct out is the decoder folder",
     lambda ws, t: _rec(ws, ws / "fp_test.safetensors", ws / "decoder"), "outputs never replace inputs"),
    # -- hostile or broken artifacts -------------------------------------------------------------
    ("fingerprints with a negative index",
     lambda ws, t: _train_decoder(_fingerprints(ws, t / "neg.safetensors",
                                                tensors={"indices": torch.arange(120) - 1}), t / "dec"),
     "negative dataset index"),
    ("fingerprints with an index past the split",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "far.safetensors", tensors={"indices": torch.arange(120) + 10_000}),
                        t / "rec"), "past the end"),
    ("fingerprints with a repeated index",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "dup.safetensors", tensors={"indices": torch.zeros(120, dtype=torch.long)}),
                        t / "rec"), "same dataset index twice"),
    ("fingerprints with negative query counts",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "q.safetensors", tensors={"queries": -torch.ones(120, 24, dtype=torch.int32)}),
                        t / "rec"), "negative query counts"),
    ("fingerprints with a bit flipped in ε",
     lambda ws, t: _rec(ws, _flip_bit(ws / "fp_test.safetensors", t / "flip.safetensors"), t / "rec"), "checksum"),
    ("fingerprints whose dataset is unknown",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "ds.safetensors", dataset="imagenet"), t / "rec"), "'dataset'"),
    ("fingerprints whose split is a number",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "sp.safetensors", split=3), t / "rec"), "'split'"),
    ("fingerprints whose eps_max is a string",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "em.safetensors", search={"eps_max": "60"}), t / "rec"), "'eps_max'"),
    ("fingerprints without a model hash",
     lambda ws, t: _rec(ws, _fingerprints(ws, t / "mh.safetensors", model_hash=None), t / "rec"), "'model_hash'"),
    ("fingerprints missing a tensor",
     lambda ws, t: _rec(ws, _drop_tensor(ws / "fp_test.safetensors", t / "drop.safetensors", "queries"), t / "rec"),
     "missing queries"),
    ("an empty fingerprint file",
     lambda ws, t: ((t / "empty.safetensors").write_bytes(b""), _rec(ws, t / "empty.safetensors", t / "rec"))[1],
     "corrupt or not a hesig file"),
    ("random bytes as fingerprints",
     lambda ws, t: ((t / "rnd.safetensors").write_bytes(os.urandom(4096)), _rec(ws, t / "rnd.safetensors", t / "rec"))[1],
     "corrupt or not a hesig file"),
    ("a header length past the end of the file",
     lambda ws, t: ((t / "hl.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}"),
                    _rec(ws, t / "hl.safetensors", t / "rec"))[1], "corrupt or not a hesig file"),
    ("a directory as the fingerprint file",
     lambda ws, t: ((t / "fpdir").mkdir(), _rec(ws, t / "fpdir", t / "rec"))[1], "not found"),
    ("a model whose in_shape is a string",
     lambda ws, t: _fp(_with_model(ws, t, in_shape="1x8x8"), t / "f.safetensors"), "'in_shape'"),
    ("a model whose num_classes is a float",
     lambda ws, t: _fp(_with_model(ws, t, num_classes=10.5), t / "f.safetensors"), "'num_classes'"),
    ("a model whose arch is unknown",
     lambda ws, t: _fp(_with_model(ws, t, arch="resnet9000"), t / "f.safetensors"), "'arch'"),
    ("a model with NaN weights",
     lambda ws, t: _fp(_with_nan_model(ws, t), t / "f.safetensors"), "NaN or infinite weights"),
    ("a model folder without weights",
     lambda ws, t: ((t / "nomodel").mkdir(), _fp_with(ws, "--model", t / "nomodel", t / "f.safetensors"))[1],
     "not found"),
    ("directions whose seed is not a number",
     lambda ws, t: _fp_with(ws, "--directions", _directions(ws, t / "d.safetensors", seed="zero"), t / "f.safetensors"),
     "'seed'"),
    ("directions of norm 1e37",
     lambda ws, t: _fp_with(ws, "--directions", _directions(ws, t / "d.safetensors", torch.full((4, 1, 8, 8), 1e36),
                                                            directions_hash=None), t / "f.safetensors"), "unit norm"),
    ("directions that are all zero",
     lambda ws, t: _fp_with(ws, "--directions", _directions(ws, t / "d.safetensors", torch.zeros(4, 1, 8, 8),
                                                            directions_hash=None), t / "f.safetensors"), "unit norm"),
    ("a set of zero directions",
     lambda ws, t: _fp_with(ws, "--directions", _directions(ws, t / "d.safetensors", torch.zeros(0, 1, 8, 8),
                                                            directions_hash=None), t / "f.safetensors"), "k >= 1"),
    ("directions of an unknown family",
     lambda ws, t: _fp_with(ws, "--directions", _directions(ws, t / "d.safetensors", family="tarot"), t / "f.safetensors"),
     "'family'"),
    ("a fingerprint file as directions",
     lambda ws, t: _fp_with(ws, "--directions", ws / "fp_test.safetensors", t / "f.safetensors"), "not a hesig directions"),
    ("a directions file as the model",
     lambda ws, t: _fp_with(ws, "--model", ws / "dirs.safetensors", t / "f.safetensors"), "'arch'"),
    ("a model as the decoder",
     lambda ws, t: ["reconstruct", "--decoder", ws / "model", "--fingerprints", ws / "fp_test.safetensors",
                    "--out", t / "rec"], "decoder"),
    ("the target model as its own class-recovery classifier",
     lambda ws, t: _rec(ws, ws / "fp_test.safetensors", t / "rec", "--classifier", ws / "model"), "independently"),
    # -- option ranges -----------------------------------------------------------------------------
    ("--rtol 2", lambda ws, t: _fp(ws, t / "f.safetensors", "--rtol", "2"), "--rtol"),
    ("--rtol -0.1", lambda ws, t: _fp(ws, t / "f.safetensors", "--rtol", "-0.1"), "--rtol"),
    ("--eps-max 1e300", lambda ws, t: _fp(ws, t / "f.safetensors", "--eps-max", "1e300"), "--eps-max"),
    ("--eps-max nan", lambda ws, t: _fp(ws, t / "f.safetensors", "--eps-max", "nan"), "eps_max must be in (0, 10000]"),
    ("--indices past the split",
     lambda ws, t: _fp_with(ws, "--indices", "0:99999", t / "f.safetensors"), "0 <= A < B <= 450"),
    ("--indices partly past the split",
     lambda ws, t: _fp_with(ws, "--indices", "440:460", t / "f.safetensors"), "0 <= A < B <= 450"),
    ("--indices negative", lambda ws, t: _fp_with(ws, "--indices", "-5:3", t / "f.safetensors"), "0 <= A < B"),
    ("--indices reversed", lambda ws, t: _fp_with(ws, "--indices", "9:3", t / "f.safetensors"), "0 <= A < B"),
    ("--indices repeated", lambda ws, t: _fp_with(ws, "--indices", "1,1,2", t / "f.safetensors"), "repeat"),
    ("--indices not numbers", lambda ws, t: _fp_with(ws, "--indices", "a:b", t / "f.safetensors"), "cannot parse"),
    ("--figure-class 99",
     lambda ws, t: _rec(ws, ws / "fp_test.safetensors", t / "rec", "--figure-class", "99"), "no fingerprinted images"),
    ("--figure-class -1",
     lambda ws, t: _rec(ws, ws / "fp_test.safetensors", t / "rec", "--figure-class", "-1"), "--figure-class"),
    ("directions --count 1e12",
     lambda ws, t: ["directions", "--dataset", "digits", "--count", "1000000000000", "--out", t / "d.safetensors"],
     "GiB"),
    ("--chunk-size 0", lambda ws, t: _fp(ws, t / "f.safetensors", "--chunk-size", "0"), "--chunk-size"),
    ("--budget 0", lambda ws, t: _fp(ws, t / "f.safetensors", "--budget", "0"), "--budget"),
    ("--points-per-round zero", lambda ws, t: _fp(ws, t / "f.safetensors", "--points-per-round", "0"),
     "--points-per-round"),
    ("--eps-min without the geometric grid", lambda ws, t: _fp(ws, t / "f.safetensors", "--eps-min", "0.1"),
     "--coarse-grid geometric"),
    ("--eps-min above --eps-max",
     lambda ws, t: _fp(ws, t / "f.safetensors", "--coarse-grid", "geometric", "--eps-min", "100"), "eps_min must be in"),
    ("a geometric grid of one point",
     lambda ws, t: _fp(ws, t / "f.safetensors", "--coarse-grid", "geometric", "--coarse-points", "1"),
     "coarse_points >= 2"),
    ("an unknown coarse grid", lambda ws, t: _fp(ws, t / "f.safetensors", "--coarse-grid", "log"), "--coarse-grid"),
    ("an unknown option", lambda ws, t: _fp(ws, t / "f.safetensors", "--turbo"), "No such option"),
    ("an unknown command", lambda ws, t: ["fingerprints"], "No such command"),
    ("a missing required option", lambda ws, t: ["fingerprint", "--model", ws / "model"], "Missing option"),
    ("an unknown dataset", lambda ws, t: _fp_with(ws, "--dataset", "imagenet", t / "f.safetensors"), "--dataset"),
    # -- the other commands -------------------------------------------------------------------------
    ("ckks-params given a directions file as the model",
     lambda ws, t: ["ckks-params", "--model", ws / "dirs.safetensors"], "'arch'"),
    ("demo --out is a file",
     lambda ws, t: ((t / "f").write_text("x"), ["demo", "--out", t / "f", "--quiet"])[1], "--out"),
    ("demo on an unsupported dataset", lambda ws, t: ["demo", "--dataset", "cifar10", "--out", t / "d"], "--dataset"),
    ("demo into another demo's folder",
     lambda ws, t: (_pin(t / "d", "demo", {"dataset": "digits", "count": 7}),
                    ["demo", "--out", t / "d", "--quiet"])[1], "another configuration"),
    ("study-directions counts that are not numbers",
     lambda ws, t: ["study-directions", "--dataset", "digits", "--counts", "a,b", "--out", t / "s"], "--counts"),
    ("study-directions prior-guided search with no queries",
     lambda ws, t: ["study-directions", "--dataset", "digits", "--precisions", "prior:0", "--out", t / "s",
                    "--model-from", ws / "model", "--evaluator-from", ws / "evaluator"], "prior-guided precision"),
    ("study-directions prior-guided search with a fraction of a query",
     lambda ws, t: ["study-directions", "--dataset", "digits", "--precisions", "prior:0.5", "--out", t / "s"], "G:rtol pairs or prior:M"),
    ("study-directions rtol out of range",
     lambda ws, t: ["study-directions", "--dataset", "digits", "--precisions", "8:2", "--out", t / "s",
                    "--model-from", ws / "model", "--evaluator-from", ws / "evaluator"], "precision"),
    ("study-defenses with a Ray option but the in-process executor",
     lambda ws, t: ["study-defenses", "--dataset", "digits", "--arch", "mlp", "--out", t / "s", "--workers", "2"],
     "--workers only apply to --executor ray"),
    ("attack rmle on Ray workers asking for no CPU and no GPU",
     lambda ws, t: ["attack", "rmle", "--model", ws / "model", "--split", "fc1act", "--out", t / "r",
                    "--executor", "ray", "--worker-cpus", "0"], "needs --worker-cpus > 0 or --worker-gpus > 0"),
    ("study-directions into a demo folder",
     lambda ws, t: (_pin(t / "s", "demo", {}), ["study-directions", "--dataset", "digits", "--arch", "mlp",
                                                "--out", t / "s", "--model-from", ws / "model"])[1],
     "holds a demo run, not a study run"),
    ("attack rmle at a layer the model lacks",
     lambda ws, t: ["attack", "rmle", "--model", ws / "model", "--split", "conv9", "--out", t / "a", "--quiet"],
     "has no layer 'conv9'"),
    ("attack rmle on a missing model",
     lambda ws, t: ["attack", "rmle", "--model", t / "none", "--split", "fc1", "--out", t / "a"], "not found"),
    ("attack inverse-network with 0 queries",
     lambda ws, t: ["attack", "inverse-network", "--model", ws / "model", "--split", "fc1", "--queries", "0",
                    "--out", t / "a"], "--queries"),
    ("attack inverse-network with a disjoint set the target does not leave",
     lambda ws, t: ["attack", "inverse-network", "--model", ws / "model", "--split", "fc1", "--query-set", "disjoint",
                    "--out", t / "a", "--quiet"], "--train-half a"),
    ("attack vicious with a malformed beta",
     lambda ws, t: ["attack", "vicious", "--dataset", "digits", "--beta", "three/1", "--out", t / "v"], "three/1"),
    ("attack vicious with an image size that is not a multiple of 8",
     lambda ws, t: ["attack", "vicious", "--dataset", "digits", "--image-size", "12", "--out", t / "v"], "multiple of 8"),
    ("detect-vicious given a folder that is not a run",
     lambda ws, t: ["detect-vicious", ws / "decoder", "--out", t / "det"], str("decoder")),
    ("output-defenses given an unknown defense",
     lambda ws, t: ["output-defenses", "--run", ws / "model", "--defense", "blur:3", "--out", t / "o"], "blur"),
    ("attack rmle writing into the model folder",
     lambda ws, t: ["attack", "rmle", "--model", ws / "model", "--split", "fc1", "--out", ws / "model", "--quiet"],
     "outputs never replace inputs"),
    ("attack shadow writing into a folder that holds the model",
     lambda ws, t: ["attack", "shadow", "--model", ws / "model", "--split", "fc1", "--out", ws, "--quiet"],
     "outputs never replace inputs"),
    # -- the service (hesig serve / hesig victim) -------------------------------------------------
    ("serve with a prior but no queries per pair",
     lambda ws, t: ["serve", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--runs", t / "r",
                    "--prior", ws / "fp_train.safetensors"], "needs both --prior and --prior-steps"),
    ("serve given a model without a polynomial form",
     lambda ws, t: ["serve", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--runs", t / "r"],
     "CKKS oracle evaluates"),
    ("serve given a token file that holds no token",
     lambda ws, t: ((t / "tok").write_text("x\n"), ["serve", "--model", ws / "model", "--directions",
                                                    ws / "dirs.safetensors", "--runs", t / "r", "--token-file",
                                                    t / "tok"])[1], "token file"),
    ("victim given no images",
     lambda ws, t: ["victim", "--server", "http://127.0.0.1:9"], "--images"),
    ("victim given a server that is not an http URL",
     lambda ws, t: ["victim", "--server", "file:///etc/passwd", "--dataset", "digits", "--indices", "0:2",
                    "--state-dir", t / "v"], "http://"),
    ("victim given an image file that is not safetensors",
     lambda ws, t: ["victim", "--server", "http://127.0.0.1:9", "--images", ws / "model" / "model.json"],
     "not a safetensors file"),
    ("victim given images outside [0, 1]",
     lambda ws, t: (_images_file(t / "imgs.safetensors", 2.0),
                    ["victim", "--server", "http://127.0.0.1:9", "--images", t / "imgs.safetensors"])[1], "in [0, 1]"),
    ("victim given a server that does not answer",
     lambda ws, t: ["victim", "--server", "http://127.0.0.1:9", "--dataset", "digits", "--indices", "0:2",
                    "--retries", "0", "--state-dir", t / "v"], "did not answer"),
    ("a defense strength out of range",
     lambda ws, t: _fp(ws, t / "f.safetensors", "--client-policy", "rr:0.9"), "must be in [0, 0.5)"),
    ("a defense the CKKS oracle cannot enforce",
     lambda ws, t: _fp(ws, t / "f.safetensors", "--oracle", "ckks", "--client-policy", "strict+input-noise:0.1"),
     "plaintext oracle only"),
    ("study-defenses: an unknown defense",
     lambda ws, t: _study_defenses(ws, t, "shield:3=standard"), "unknown client policy 'shield:3'"),
    ("study-defenses: an unknown attacker",
     lambda ws, t: _study_defenses(ws, t, "none=oracle-peek"), "unknown attacker 'oracle-peek'"),
    ("study-defenses: an attacker that does not fit its budget",
     lambda ws, t: _study_defenses(ws, t, "evaluations:10=budgeted:10"), "cannot ask each of 24 directions"),
    ("an empty data root",
     lambda ws, t: ((t / "empty_root").mkdir(), ["train-model", "--dataset", "mnist", "--data-root", t / "empty_root",
                                                 "--epochs", "1", "--out", t / "m", "--quiet"])[1], "mnist not found"),
    ("a data root that does not exist",
     lambda ws, t: ["train-model", "--dataset", "fashion-mnist", "--data-root", t / "nowhere", "--epochs", "1",
                    "--out", t / "m", "--quiet"], "fashion-mnist not found"),
]


def _study_defenses(ws, t, grid):
    return ["study-defenses", "--dataset", "digits", "--arch", "mlp", "--out", t / "study", "--count", "24",
            "--model-from", ws / "model", "--evaluator-from", ws / "evaluator", "--grid", grid, "--quiet"]


def _images_file(path: Path, value: float) -> Path:
    from safetensors.torch import save_file
    save_file({"images": torch.full((2, 1, 8, 8), value)}, str(path))
    return path


def _pin(folder: Path, kind: str, config: dict) -> Path:
    from hesig.jobs.runstore import RunStore
    RunStore(folder, kind, config)
    return folder


def _fp_with(ws, option, value, out):
    argv = _fp(ws, out)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


def _with_model(ws, t, **changes):
    folder = t / "ws_model"
    _copy_model(ws, folder / "model", **changes)
    for name in ("dirs.safetensors",):
        (folder / name).write_bytes((ws / name).read_bytes())
    return folder


def _with_nan_model(ws, t):
    folder = t / "ws_nan"
    (folder / "model").mkdir(parents=True)
    tensors, meta = load_tensors(ws / "model" / "model.safetensors")
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")
    save_tensors(folder / "model" / "model.safetensors", tensors, meta)
    (folder / "dirs.safetensors").write_bytes((ws / "dirs.safetensors").read_bytes())
    return folder


def _flip_bit(src: Path, dst: Path) -> Path:
    blob = bytearray(src.read_bytes())
    blob[-200] ^= 0x08  # inside the tensor payload
    dst.write_bytes(bytes(blob))
    return dst


def _drop_tensor(src: Path, dst: Path, name: str) -> Path:
    tensors, meta = load_tensors(src)
    tensors.pop(name)
    save_tensors(dst, tensors, meta)
    return dst


@pytest.mark.parametrize("build, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_destroys_nothing(workspace, cli, tmp_path, build, fragment):
    argv = build(workspace, tmp_path)
    before = _snapshot(workspace)
    code, _, err = cli.run(*argv)
    cli.assert_error(code, err, fragment)
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert _snapshot(workspace) == before


def test_force_replaces_another_jobs_file_but_never_an_input(workspace, cli, tmp_path):
    out = tmp_path / "fp.safetensors"
    out.write_bytes((workspace / "fp_train.safetensors").read_bytes())
    code, _, err = cli.run(*_fp(workspace, out, "--force"))
    assert code == 0, err
    assert len(Fingerprints.load(out)) == 20
    code, _, err = cli.run(*_fp(workspace, workspace / "dirs.safetensors", "--force"))
    cli.assert_error(code, err, "outputs never replace inputs")


def test_a_chunk_of_another_width_is_recomputed_not_a_traceback(workspace, cli, tmp_path):
    from hesig.jobs.fingerprint import store_dir
    out = tmp_path / "fp.safetensors"
    argv = _fp(workspace, out, "--chunk-size", "10")
    fresh = Fingerprints.load(workspace / "fp_test.safetensors")
    code, _, _ = cli.run(*argv, "--budget", int(fresh.queries[:10].sum() + 5))
    assert code == 3
    chunk = store_dir(out) / "chunk-00000.safetensors"
    tensors, meta = load_tensors(chunk)
    save_tensors(chunk, {k: (v[:, :5] if v.ndim == 2 else v) for k, v in tensors.items()}, meta)  # valid, 5 wide
    code, _, err = cli.run(*argv)
    assert code == 0 and "another shape" in err, err
    assert torch.equal(Fingerprints.load(out).eps, fresh.eps[:20])


def test_a_budget_smaller_than_one_call_is_spent_exactly(workspace, cli, tmp_path):
    code, _, err = cli.run(*_fp(workspace, tmp_path / "f.safetensors", "--budget", "100"))
    cli.assert_error(code, err, "100 of 100 queries used", exit_code=3)


def test_outputs_get_the_users_umask(workspace, tmp_path):
    old = os.umask(0o022)
    try:
        from hesig.core.io import atomic_write_json
        path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (workspace / "model" / "model.safetensors").stat().st_mode & 0o044 == 0o044  # group/others can read


def test_same_seed_gives_byte_identical_model_and_decoder(workspace, cli, tmp_path):
    for run in ("a", "b"):
        assert cli.run("train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--seed", "3",
                       "--out", tmp_path / run / "model", "--quiet")[0] == 0
        assert cli.run(*_train_decoder(workspace / "fp_train.safetensors", tmp_path / run / "decoder"))[0] == 0
    for name in ("model/model.safetensors", "decoder/decoder.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_interrupt_messages_say_what_is_kept():
    assert "finished chunks are kept" in _interrupted(["fingerprint", "--model", "m"])
    assert "finished steps are kept" in _interrupted(["demo"])
    assert "keeps nothing partial" in _interrupted(["train-decoder", "--fingerprints", "f"])
    assert "keeps nothing partial" in _interrupted(["--quiet"])


def test_ckks_search_holds_one_session_at_a_time():
    """The CKKS oracle answers one image at a time; the search releases each image when done,
    so server memory does not grow with the chunk size (peak RSS: benchmarks/ckks_memory.py)."""
    from hesig.oracles.base import Oracle
    from hesig.signature.search import BoundarySearch

    class Recording(Oracle):
        rows_at_once = 1

        def __init__(self):
            super().__init__(3, (1, 2, 2))
            self.open, self.most_open = set(), 0

        def _answer(self, perturbations, rows):
            self.open.update(rows.tolist())
            self.most_open = max(self.most_open, len(self.open))
            return perturbations.flatten(1).norm(dim=1) < 1.0

        def release(self, rows):
            self.open -= set(rows.tolist())

    oracle = Recording()
    result = BoundarySearch(4.0, coarse_points=4).run(oracle, torch.eye(4).view(4, 1, 2, 2))
    assert oracle.most_open == 1 and not oracle.open
    assert torch.allclose(result.eps, torch.ones(3, 4), rtol=0.02)


def test_same_seed_gives_identical_attack_models(cli, tmp_path):
    """The inverse network, the shadow model and the vicious F and G: two seeded CPU runs, same bytes."""
    assert cli.run("train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--train-half", "a",
                   "--out", tmp_path / "target", "--quiet")[0] == 0
    common = ["--model", tmp_path / "target", "--split", "fc1act", "--indices", "0:20", "--quiet"]
    runs = {"inverse": ["attack", "inverse-network", "--query-set", "gaussian", "--queries", "200", "--epochs", "1", *common],
            "shadow": ["attack", "shadow", "--shadow-data", "disjoint", "--epochs", "1", "--iterations", "5", *common],
            "vicious": ["attack", "vicious", "--dataset", "digits", "--image-size", "8", "--epochs", "1",
                        "--batch-size", "64", "--train-limit", "300", "--quiet"]}
    for name, argv in runs.items():
        for copy in ("a", "b"):
            code, _, err = cli.run(*argv, "--out", tmp_path / copy / name)
            assert code == 0, err
    for name in ("inverse/reconstructions.safetensors", "shadow/reconstructions.safetensors",
                 "vicious/model/model.safetensors", "vicious/decoder.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    shadows = [load_tensors(next((tmp_path / c / "shadow").rglob("shadow*.safetensors")))[0] for c in ("a", "b")]
    assert all(torch.equal(shadows[0][k], shadows[1][k]) for k in shadows[0])


def test_a_ckks_job_the_machine_cannot_hold_is_refused(workspace, cli, tmp_path, monkeypatch):
    import hesig.oracles.ckks.channel as ckks_channel
    monkeypatch.setattr(ckks_channel, "available_mb", lambda: 1000.0)
    code, _, err = cli.run(*_fp(workspace, tmp_path / "f.safetensors", "--oracle", "ckks"))
    cli.assert_error(code, err, "only 1000 MB are available")
    assert not (tmp_path / "f.safetensors").exists()


def test_a_client_policy_that_stops_the_search_is_one_line_with_the_way_out(workspace, cli, tmp_path):
    code, _, err = cli.run(*_fp(workspace, tmp_path / "f.safetensors", "--client-policy", "strict+budget:1"))
    cli.assert_error(code, err, "decryption budget of 1 replies", "--client-policy strict", exit_code=3)
    code, _, err = cli.run(*_fp(workspace, tmp_path / "f.safetensors", "--client-policy", "strict+budget:1",
                                "--client-policy", "no-such-policy"))
    cli.assert_error(code, err, "no-such-policy")
    code, _, err = cli.run(*_fp(workspace, tmp_path / "g.safetensors", "--client-policy", "strict+evaluations:10"))
    cli.assert_error(code, err, "evaluation budget of 10 evaluations", exit_code=3)
    assert not (tmp_path / "g.safetensors").exists()
