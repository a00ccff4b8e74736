"""The one run store: pinned configuration, checksummed atomic chunks, resume, refusal; executors."""

from __future__ import annotations

import json

import pytest
import torch

from hesig.core.errors import CheckpointError, MismatchError
from hesig.jobs.executor import Executor, InProcessExecutor, make_executor
from hesig.jobs.runstore import RunStore


def _compute(calls):
    def compute(i):
        calls.append(i)
        return {"x": torch.full((3,), float(i))}, {"chunk": i}
    return compute


def test_chunks_are_computed_once_and_reused_in_order(tmp_path):
    calls = []
    store = RunStore(tmp_path / "run", "demo", {"a": 1})
    parts = store.chunks(["c0", "c1", "c2"], _compute(calls))
    assert calls == [0, 1, 2] and [p[1]["chunk"] for p in parts] == [0, 1, 2]
    again = RunStore(tmp_path / "run", "demo", {"a": 1}).chunks(["c0", "c1", "c2"], _compute(calls))
    assert calls == [0, 1, 2]
    assert all(torch.equal(a[0]["x"], b[0]["x"]) for a, b in zip(parts, again))


def test_a_flipped_bit_is_detected_reported_and_recomputed(tmp_path):
    calls, notes = [], []
    store = RunStore(tmp_path / "run", "demo", {"a": 1}, log=notes.append)
    store.chunks(["c0", "c1"], _compute(calls))
    path = store.path("c1")
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x10  # inside the tensor payload
    path.write_bytes(bytes(blob))
    parts = store.chunks(["c0", "c1"], _compute(calls))
    assert calls == [0, 1, 1] and torch.equal(parts[1][0]["x"], torch.full((3,), 1.0))
    assert len(notes) == 1 and "checksum" in notes[0] and "c1" in notes[0]


def test_another_configuration_or_kind_is_refused_in_one_line(tmp_path):
    RunStore(tmp_path / "run", "demo", {"a": 1, "b": [1, 2]})
    with pytest.raises(MismatchError, match=r"another configuration \(b differ\)"):
        RunStore(tmp_path / "run", "demo", {"a": 1, "b": [1, 3]})
    with pytest.raises(MismatchError, match="holds a demo run, not a study run"):
        RunStore(tmp_path / "run", "study", {"a": 1, "b": [1, 2]})
    (tmp_path / "run" / "run.json").write_text("{trunc")
    with pytest.raises(CheckpointError, match="unreadable"):
        RunStore(tmp_path / "run", "demo", {"a": 1})


def test_steps_run_once_and_a_tampered_record_is_recomputed(tmp_path):
    store = RunStore(tmp_path / "run", "demo", {})
    runs = []
    make = lambda: runs.append(1) or {"value": len(runs)}  # noqa: E731
    assert store.step("train", make) == ({"value": 1}, False)
    assert store.step("train", make) == ({"value": 1}, True)
    store.step_path("train").write_text("{not json")
    assert store.step("train", make) == ({"value": 2}, False)
    assert [r["value"] for r in store.steps()] == [2]


def test_independent_steps_write_their_files_then_their_record_and_are_reused(tmp_path):
    store = RunStore(tmp_path / "run", "demo", {})
    calls, seen = [], []

    def cell(i):
        calls.append(i)
        return {"cell": i}, {f"samples/c{i}.safetensors": ({"x": torch.full((2,), float(i))}, {"cell": i})}

    def saved(i, record):  # the record is written last: its file is already there
        seen.append(i)
        assert (tmp_path / "run" / "samples" / f"c{i}.safetensors").exists() and store.done(f"cell-{i}")

    names = ["cell-0", "cell-1", "cell-2"]
    assert store.compute_steps(names, cell, on_saved=saved) == [{"cell": 0}, {"cell": 1}, {"cell": 2}]
    store.step_path("cell-1").unlink()  # a killed run
    assert store.compute_steps(names, cell, on_saved=saved)[1] == {"cell": 1}
    assert calls == [0, 1, 2, 1] and seen == [0, 1, 2, 1]
    escaping = lambda i: ({"cell": i}, {"../outside.safetensors": ({"x": torch.zeros(1)}, {})})  # noqa: E731
    with pytest.raises(MismatchError, match="outside the run folder"):
        store.compute_steps(["cell-3"], escaping)
    assert not (tmp_path / "outside.safetensors").exists() and not store.done("cell-3")


def test_an_error_in_a_chunk_keeps_the_chunks_before_it(tmp_path):
    calls = []

    def compute(i):
        if i == 1:
            raise RuntimeError("killed")
        return _compute(calls)(i)

    store = RunStore(tmp_path / "run", "demo", {})
    with pytest.raises(RuntimeError):
        store.chunks(["c0", "c1", "c2"], compute)
    assert store.path("c0").exists() and not store.path("c1").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kind"] == "demo"


def test_any_executor_behind_the_same_interface(tmp_path):
    class Reversed(Executor):  # results may come back in any order
        def map(self, compute, tasks):
            for task in reversed(list(tasks)):
                yield task, compute(task)

    calls = []
    parts = RunStore(tmp_path / "run", "demo", {}).chunks(["c0", "c1", "c2"], _compute(calls), executor=Reversed())
    assert calls == [2, 1, 0] and [p[1]["chunk"] for p in parts] == [0, 1, 2]
    assert isinstance(make_executor(), InProcessExecutor)
    with pytest.raises(Exception, match="unknown executor"):
        make_executor("carrier-pigeon")


def test_fingerprint_chunk_with_a_flipped_bit_is_recomputed_through_the_cli(workspace, cli, tmp_path):
    from hesig.jobs.fingerprint import store_dir
    from hesig.signature.fingerprints import Fingerprints
    common = ["fingerprint", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
              "--dataset", "digits", "--split", "test", "--indices", "0:80", "--chunk-size", "40", "--quiet"]
    out = tmp_path / "fp.safetensors"
    fresh = Fingerprints.load(workspace / "fp_test.safetensors")
    budget = int(fresh.queries[:40].sum() + fresh.queries[40:80].sum() // 2)
    code, _, err = cli.run(*common, "--out", out, "--budget", budget)
    assert code == 3, err
    chunk = store_dir(out) / "chunk-00000.safetensors"
    blob = bytearray(chunk.read_bytes())
    blob[-5] ^= 0x40
    chunk.write_bytes(bytes(blob))
    code, _, err = cli.run(*common, "--out", out)
    assert code == 0, err
    assert torch.equal(Fingerprints.load(out).eps, fresh.eps[:80])
