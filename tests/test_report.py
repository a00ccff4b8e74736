"""``hesig report``: one self-contained report.html per run folder; one error line for anything else."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest


class _Tags(HTMLParser):
    """Every tag and its attributes, to check that nothing is loaded from outside the file."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], obj


def assert_self_contained(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "link" not in names and "iframe" not in names
    for tag, attrs in parser.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith("data:image/png;base64,"), (tag, attrs[key][:80])
    assert not re.search(r"url\(|@import|https?://", text), "an external resource"
    return parser


@pytest.fixture(scope="module")
def rec(workspace, tmp_path_factory):
    """A finished `hesig reconstruct` folder (copied, so tests may alter it)."""
    from hesig.cli import main
    out = tmp_path_factory.mktemp("rec") / "rec"
    try:
        main(["reconstruct", "--decoder", str(workspace / "decoder"), "--fingerprints", str(workspace / "fp_test.safetensors"),
              "--classifier", str(workspace / "evaluator"), "--out", str(out), "--quiet"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


def test_report_of_a_reconstruction_is_self_contained_and_names_every_metric(rec, cli, tmp_path):
    folder = tmp_path / "rec"
    shutil.copytree(rec, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out, err = cli.run("report", folder)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["kind"] == "reconstruction" and summary["figures"] == 3
    text = (folder / "report.html").read_text()
    parser = assert_self_contained(text)
    assert sum(tag == "img" for tag, _ in parser.tags) == 3
    metrics = json.loads((folder / "metrics.json").read_text())
    for key, value in _leaves(metrics["metrics"]):
        assert key in text, key  # every metric by name (the "every number" table) ...
    for row in ("attack", "class-mean baseline", "mean-image baseline", "Threat model", "Queries", "Hashes"):
        assert row in text, row
    assert metrics["identity"]["model_hash"] in text and metrics["classifier_hash"] in text
    assert "by construction" in text  # the class-mean row says why its class recovery is ~100%
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "report.html"} == before  # inputs untouched
    code, _, err = cli.run("report", folder)  # its own report is replaced
    assert code == 0, err


def test_report_of_a_demo_folder(rec, cli, tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(rec, demo / "reconstruct")
    config = {"dataset": "digits", "arch": "mlp", "count": 24, "seed": 0, "eps_max": 60.0, "rtol": 0.01,
              "coarse_points": 8, "train_limit": None}
    (demo / "run.json").write_text(json.dumps({"kind": "demo", "config": config, "hesig_version": "0.1.0"}))
    (demo / "summary.json").write_text(json.dumps({"steps": {"train-model": {"step_seconds": 1.5, "reused": False}},
                                                   "target_model": {"arch": "mlp", "dataset": "digits",
                                                                    "test_accuracy": 0.9, "model_hash": "abc123"}}))
    code, out, err = cli.run("report", demo, "--out", tmp_path / "r.html")
    assert code == 0, err
    text = (tmp_path / "r.html").read_text()
    assert_self_contained(text)
    assert "hesig demo --dataset digits --arch mlp --count 24 --seed 0" in text and "abc123" in text
    assert text.count("<img") == 3


def test_report_escapes_text_from_the_run(rec, cli, tmp_path):
    folder = tmp_path / "rec"
    shutil.copytree(rec, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["identity"]["dataset"] = "<script>alert(1)</script>"
    metrics["hesig_version"] = '"><img src=x onerror=alert(1)>'
    (folder / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = cli.run("report", folder)
    assert code == 0, err
    text = (folder / "report.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "<img src=x" not in text
    assert_self_contained(text)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: None, "not a hesig run folder"),
    (lambda d: (d / "run.json").write_text("{oops"), "not valid JSON"),
    (lambda d: (d / "run.json").write_text("[1, 2]"), "JSON object"),
    (lambda d: (d / "run.json").write_text('{"kind": "banana", "config": {}}'), "does not know"),
    (lambda d: (d / "run.json").write_text('{"kind": "demo", "config": {}}'), "missing"),
    (lambda d: (d / "metrics.json").write_text('{"a": 1}'), "not a hesig reconstruction"),
    (lambda d: (d / "metrics.json").write_text('{"artifact": "reconstruction", "metrics": {"x": 1}}'), "no 'attack' row"),
    (lambda d: (d / "detection.json").write_bytes(b"\xff\xfe\x00"), "not valid JSON"),
])
def test_report_refuses_what_is_not_a_run(cli, tmp_path, make, fragment):
    folder = tmp_path / "d"
    folder.mkdir()
    make(folder)
    code, _, err = cli.run("report", folder)
    cli.assert_error(code, err, fragment)
    assert not (folder / "report.html").exists()


def test_report_never_replaces_an_input_or_a_foreign_file(rec, cli, tmp_path):
    folder = tmp_path / "rec"
    shutil.copytree(rec, folder)
    metrics = (folder / "metrics.json").read_bytes()
    code, _, err = cli.run("report", folder, "--out", folder / "metrics.json")
    cli.assert_error(code, err, "never replaces an input")
    assert (folder / "metrics.json").read_bytes() == metrics
    (folder / "report.html").write_text("my notes")
    code, _, err = cli.run("report", folder)
    cli.assert_error(code, err, "not written by hesig report")
    assert (folder / "report.html").read_text() == "my notes"
    code, _, err = cli.run("report", tmp_path / "nowhere")
    cli.assert_error(code, err, "not a folder")


def test_report_of_a_fingerprint_file_and_of_an_attack(workspace, cli, tmp_path):
    fp = tmp_path / "fp.safetensors"
    shutil.copy(workspace / "fp_test.safetensors", fp)
    code, out, err = cli.run("report", fp)
    assert code == 0, err
    text = (tmp_path / "fp.safetensors.report.html").read_text()
    assert_self_contained(text)
    assert "oracle queries per image" in text and "<img" not in text
    code, _, err = cli.run("report", workspace / "model" / "model.safetensors", "--out", tmp_path / "m.html")
    cli.assert_error(code, err, "not a hesig fingerprint file")
    code, _, err = cli.run("attack", "rmle", "--model", workspace / "model", "--split", "fc1", "--indices", "0:10",
                           "--iterations", "5", "--out", tmp_path / "rmle", "--quiet")
    assert code == 0, err
    code, out, err = cli.run("report", tmp_path / "rmle")
    assert code == 0, err
    assert json.loads(out)["kind"] == "rmle attack"
    text = (tmp_path / "rmle" / "report.html").read_text()
    assert_self_contained(text)
    metrics = json.loads((tmp_path / "rmle" / "metrics.json").read_text())
    for key, _ in _leaves(metrics["metrics"]):
        assert key in text, key
    assert "class-mean baseline" in text and "queries to the edge" in text
