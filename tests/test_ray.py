"""The Ray executor: same fingerprints as in-process, exact budgets, a killed worker, Ctrl-C, bad input.

One local two-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a worker node, 1 CPU
each) serves the whole module; the CLI finds Ray initialised and runs on it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import types
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

ray = pytest.importorskip("ray")

from hesig.jobs.executor import make_executor  # noqa: E402
from hesig.jobs.fingerprint import FingerprintChunk, LedgerOracle, fingerprint_rows, store_dir  # noqa: E402
from hesig.jobs.ray_executor import RayExecutor  # noqa: E402
from hesig.jobs.runstore import RunStore  # noqa: E402
from hesig.models.architectures import Square  # noqa: E402
from hesig.oracles.plaintext import PlaintextOracle  # noqa: E402
from hesig.signature.fingerprints import Fingerprints  # noqa: E402
from hesig.signature.search import BoundarySearch  # noqa: E402

# Classes defined here travel to the workers by value (the workers cannot import this test module).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    small = {"num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args=small)
    c.add_node(**{k: v for k, v in small.items() if k != "include_dashboard"})
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def _same(a: Fingerprints, b: Fingerprints) -> None:
    """Same tensors, same metadata apart from the timings."""
    for key in ("eps", "censored", "queries", "indices"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    drop = lambda meta: {k: v for k, v in meta.items() if k != "compute_seconds"}  # noqa: E731
    assert drop(a.meta) == drop(b.meta)


def _common(ws):
    return ["fingerprint", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--dataset", "digits",
            "--split", "test", "--indices", "0:120", "--chunk-size", "30", "--quiet"]


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """The in-process fingerprints of digits test images 0:120 in chunks of 30."""
    from hesig.cli import main
    out = tmp_path_factory.mktemp("ref") / "inproc.safetensors"
    try:
        main([str(a) for a in _common(workspace)] + ["--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return Fingerprints.load(out)


def test_plaintext_same_bytes_and_chunks_reused_across_executors(cluster, workspace, reference, cli, tmp_path):
    """A budget that covers one chunk: one executor stops (exit 3) after it, the other resumes; the
    file equals the in-process one byte for byte (chunks computed by Ray in the first case, all but
    the first in the second)."""
    common = _common(workspace)
    one_chunk = int(reference.queries[:30].sum()) + 10
    for first, then, name in ((), ("--executor", "ray"), "a"), (("--executor", "ray", "--workers", "1"), (), "b"):
        out = tmp_path / f"{name}.safetensors"
        code, _, err = cli.run(*common, "--out", out, "--budget", one_chunk, *first)
        assert code == 3 and "budget" in err, err
        kept = sorted(p.name for p in store_dir(out).glob("chunk-*.safetensors"))
        assert kept == ["chunk-00000.safetensors"]
        code, _, err = cli.run(*common, "--out", out, *then)
        assert code == 0, err
        _same(Fingerprints.load(out), reference)


def test_budget_is_exact_across_concurrent_chunks(cluster, workspace, reference, cli, tmp_path):
    common = _common(workspace)
    needed = int(reference.queries.sum())
    # Exactly enough: no chunk is refused although two run at once; the same bytes as in-process.
    code, _, err = cli.run(*common, "--out", tmp_path / "exact.safetensors", "--budget", needed, "--executor", "ray")
    assert code == 0, err
    _same(Fingerprints.load(tmp_path / "exact.safetensors"), reference)
    # One short: refused (exit 3), and what the saved chunks hold never exceeds the budget.
    code, _, err = cli.run(*common, "--out", tmp_path / "short.safetensors", "--budget", needed - 1,
                           "--executor", "ray", "--workers", "2")
    assert code == 3 and "query budget exhausted" in err and "Traceback" not in err, err
    saved = [load_file(p)["queries"] for p in store_dir(tmp_path / "short.safetensors").glob("chunk-*.safetensors")]
    assert sum(int(q.sum()) for q in saved) <= needed - 1


class _Counted:
    """A chunk task that reports how many queries its oracle really answered, even when refused."""

    def __init__(self, images, dirs, model, ledger):
        self.images, self.dirs, self.model, self.ledger = images, dirs, model, ledger

    def __call__(self, i):
        inner = PlaintextOracle(self.model, self.images[i * 10:(i + 1) * 10], device="cpu")
        try:
            BoundarySearch(8.0).run(LedgerOracle(inner, self.ledger), self.dirs)
            return inner.queries, True
        except Exception:  # QueryBudgetExhausted
            return inner.queries, False


def test_the_shared_ledger_never_lets_workers_overshoot(cluster, workspace):
    from hesig.data import load_dataset
    from hesig.models import load_model
    from hesig.signature.directions import Directions
    images = load_dataset("digits", "test").images[:60]
    dirs = Directions.load(workspace / "dirs.safetensors").vectors[:6]
    model = load_model(workspace / "model").model
    executor = RayExecutor(workers=2)
    budget = 1700  # about a third of what the six chunks need
    ledger = executor.ledger(budget)
    answered = list(executor.map(_Counted(images, dirs, model, ledger), range(6)))
    total = sum(q for _, (q, _) in answered)
    assert total <= budget and total == budget - ledger.remaining()  # every granted query was answered
    assert not all(ok for _, (_, ok) in answered)  # and so some chunks were refused


def _tiny_ckks_target():
    torch.manual_seed(2)
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 2, 4, stride=3)), ("act1", Square()), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(18, 8)), ("act2", Square()), ("fc2", nn.Linear(8, 3))])).double()
    return types.SimpleNamespace(model=model, in_shape=(1, 10, 10), arch="tiny")


def test_ckks_on_ray_matches_in_process_within_the_search_tolerance(cluster, tmp_path):
    """CKKS encryption is randomised (fresh keys per chunk): two in-process runs already differ by one
    refinement step on a pair now and then, so the comparison is within the search tolerance."""
    from hesig.oracles.ckks.oracle import CKKSFactory
    target = _tiny_ckks_target()
    g = torch.Generator().manual_seed(1)
    images = torch.rand((2, 1, 10, 10), generator=g)
    dirs = torch.randn((2, 1, 10, 10), generator=g)
    dirs /= dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    search = BoundarySearch(30.0)
    try:  # a client that answers every reply under one key (the parity of executors is the point here)
        factory = CKKSFactory(target, client_policy="strict")
    except TypeError:  # before client policies
        factory = CKKSFactory(target)
    runs = [fingerprint_rows(factory, dirs, images, torch.arange(2), search, tmp_path / f"{name}.safetensors",
                             {"test": "ckks"}, chunk_size=1, executor=executor, progress=False)
            for name, executor in (("inproc", None), ("ray", RayExecutor(workers=2, cpus_per_worker=1)))]
    a, b = runs
    assert torch.equal(a.indices, b.indices) and torch.equal(a.censored, b.censored) and not a.censored.all()
    assert torch.allclose(a.eps, b.eps, rtol=2 * search.rtol, atol=1e-6), (a.eps, b.eps)
    assert a.meta["oracle_costs"]["evaluations"] > 0 and b.meta["oracle_costs"]["evaluations"] > 0


def _cells(folder):
    """A study's cell records without their timings."""
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "cell_seconds"}
            for p in sorted((folder / "steps").glob("cell-*.json"))}


def _tensor_files(folder, pattern):
    return {p.relative_to(folder).as_posix(): load_file(p) for p in sorted(folder.glob(pattern))}


def test_study_cells_and_rmle_chunks_on_ray_equal_in_process(cluster, workspace, cli, tmp_path):
    """The defense study's cells and the rMLE chunks, computed by Ray workers, give the records and
    tensors of the in-process run; only the driver writes (each sample file once, beside its cell).

    Byte equality needs the same torch thread count on both sides (summation order in training): a
    1-CPU worker runs one thread, so the in-process run here does too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _study_and_rmle_on_both(workspace, cli, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _study_and_rmle_on_both(workspace, cli, tmp_path):
    study = ["study-defenses", "--dataset", "digits", "--arch", "mlp", "--n-train", "200", "--n-test", "30",
             "--n-honest", "10", "--count", "12", "--decoder-epochs", "1", "--quiet",
             "--model-from", workspace / "model", "--evaluator-from", workspace / "evaluator",
             "--grid", "none=standard;rr:0.1=vote:3;evaluations:40=standard"]
    rmle = ["attack", "rmle", "--model", workspace / "model", "--split", "fc1act", "--indices", "0:12",
            "--iterations", "5", "--chunk-size", "4", "--quiet"]
    for argv, name in ((study, "study"), (rmle, "rmle")):
        for extra in ((), ("--executor", "ray", "--workers", "2")):
            code, _, err = cli.run(*argv, "--out", tmp_path / f"{name}{len(extra)}", *extra)
            assert code == 0, err
    a, b = tmp_path / "study0", tmp_path / "study4"
    assert len(_cells(a)) == 3 and _cells(a) == _cells(b)
    stamps = {p.name: p.stat().st_mtime_ns for p in (b / "steps").glob("cell-*.json")}
    code, _, err = cli.run(*study, "--out", b)  # the other executor resumes: every cell is reused
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in (b / "steps").glob("cell-*.json")} == stamps
    samples = _tensor_files(a, "samples/*.safetensors")
    assert len(samples) == 3 and samples.keys() == _tensor_files(b, "samples/*.safetensors").keys()
    assert all(torch.equal(t, _tensor_files(b, "samples/*.safetensors")[k][n]) for k, ts in samples.items() for n, t in ts.items())
    a, b = tmp_path / "rmle0", tmp_path / "rmle4"
    chunks = _tensor_files(a, "chunks/*.safetensors")
    assert len(chunks) == 3 and all(torch.equal(t, _tensor_files(b, "chunks/*.safetensors")[k][n])
                                    for k, ts in chunks.items() for n, t in ts.items())
    assert json.loads((a / "metrics.json").read_text())["metrics"] == json.loads((b / "metrics.json").read_text())["metrics"]


class _KillOnce:
    """Wraps a chunk task: the first attempt at chunk ``victim`` writes its worker's pid and waits to be killed."""

    def __init__(self, compute, folder, victim):
        self.compute, self.folder, self.victim = compute, str(folder), victim

    def __call__(self, i):
        marker = os.path.join(self.folder, "pid")
        if i == self.victim and not os.path.exists(marker):
            with open(marker + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(marker + ".tmp", marker)
            time.sleep(60)  # killed from outside long before this ends
        return self.compute(i)


class _KillingRay(RayExecutor):
    def __init__(self, folder, **options):
        super().__init__(**options)
        self.folder = folder

    def map(self, compute, tasks):
        return super().map(_KillOnce(compute, self.folder, victim=2), tasks)


def test_a_worker_killed_mid_job_is_retried_and_every_chunk_is_written_once(cluster, workspace, reference, cli,
                                                                           tmp_path, monkeypatch):
    common = _common(workspace)
    executor = _KillingRay(tmp_path, workers=2)
    monkeypatch.setattr("hesig.jobs.executor.EXECUTORS", {"in-process": None, "ray": lambda **o: executor})
    saves = []
    real_save = RunStore.save
    monkeypatch.setattr(RunStore, "save", lambda self, name, *a, **k: saves.append(name) or real_save(self, name, *a, **k))

    def kill_when_ready():
        marker = tmp_path / "pid"
        for _ in range(3000):  # up to 300 s: on a loaded machine Ray's workers can take a minute to start
            if marker.exists():
                os.kill(int(marker.read_text()), signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_ready, daemon=True)
    killer.start()
    code, _, err = cli.run(*common, "--out", tmp_path / "ray.safetensors", "--executor", "ray")
    killer.join(timeout=5)
    assert code == 0, err
    assert executor.retries == 1 and "a Ray worker died computing chunk 2" in err
    assert sorted(saves) == [f"chunk-{i:05d}" for i in range(4)]  # each chunk written exactly once
    _same(Fingerprints.load(tmp_path / "ray.safetensors"), reference)


class _Slow:
    def __call__(self, i):
        time.sleep(0.2 if i == 0 else 30)
        return {"x": torch.full((2,), float(i))}, {"chunk": i}


def test_ctrl_c_stops_the_cluster_work_and_keeps_finished_chunks(cluster, tmp_path):
    store = RunStore(tmp_path / "run", "demo", {})

    def interrupt(i, tensors, meta):
        raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        store.chunks([f"c{i}" for i in range(4)], _Slow(), executor=RayExecutor(workers=2), on_saved=interrupt)
    assert time.perf_counter() - t0 < 25  # the 30 s chunk in flight was not waited for
    assert store.path("c0").exists() and not any(store.path(f"c{i}").exists() for i in (1, 2, 3))
    for _ in range(100):  # the killed actors give their CPUs back
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]:
            break
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


def test_the_compute_task_pickles_with_the_standard_library(workspace):
    import pickle
    chunk = FingerprintChunk(lambda s, b: None, torch.zeros(1), torch.zeros(1), torch.zeros(1), [(0, 1)],
                             BoundarySearch(), None, "x")
    chunk.make_oracle = None  # the factory is the registry's (tested through the CLI above)
    assert pickle.loads(pickle.dumps(chunk)).bounds == [(0, 1)]


@pytest.mark.parametrize("argv, fragment", [
    (("--executor", "carrier-pigeon"), "'carrier-pigeon' is not one of 'in-process', 'ray'"),
    (("--executor", "ray", "--workers", "0"), "--workers must be an integer >= 1"),
    (("--executor", "ray", "--worker-cpus", "-1"), "--worker-cpus must be a number >= 0"),
    (("--executor", "ray", "--ray-address", "127.0.0.1:1"), "cannot reach a Ray cluster at 127.0.0.1:1"),
    (("--executor", "ray", "--ray-address", "nowhere"), "--ray-address must be auto, local or HOST:PORT"),
    (("--workers", "2"), "--workers only apply to --executor ray"),
])
def test_bad_executor_options_are_one_line(cli, workspace, tmp_path, argv, fragment):
    code, _, err = cli.run(*_common(workspace), "--out", tmp_path / "x.safetensors", *argv)
    cli.assert_error(code, err, fragment)
    assert not (tmp_path / "x.safetensors").exists()


def test_make_executor_builds_ray_lazily():
    assert make_executor("ray", workers=3).workers == 3
    assert "ray" in sys.modules  # imported by this test module, not by hesig.cli (tests/test_layout.py)
