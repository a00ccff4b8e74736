"""hesig serve / hesig victim: real processes on loopback, ciphertexts over HTTP.

A hecnn on 10x10 inputs (100 pixel ciphertexts per image, real N = 8192 parameters) and a
coarse search keep each image to a few seconds; the protocol, the limits and the faults are
the same as for MNIST.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from hesig.core.io import load_tensors
from hesig.jobs.fingerprint import fingerprint_rows, prior_search, store_dir
from hesig.models import load_model
from hesig.models.architectures import build_model
from hesig.models.checkpoint import save_model
from hesig.oracles.ckks import wire
from hesig.oracles.ckks.oracle import CKKSFactory
from hesig.oracles.plaintext import PlaintextFactory
from hesig.signature.directions import Directions
from hesig.signature.fingerprints import Fingerprints
from hesig.signature.search import BoundarySearch

HESIG = [sys.executable, "-c", "from hesig.cli import main; main()"]
SHAPE = (1, 10, 10)
SEARCH = ["--rtol", "0.3", "--coarse-points", "4"]
TOKEN = "test-token-0123456789abcdef"


def search() -> BoundarySearch:
    return BoundarySearch(60.0, coarse_points=4, rtol=0.3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ws = tmp_path_factory.mktemp("svc")
    torch.manual_seed(3)
    save_model(build_model("hecnn", SHAPE, 10), ws / "model",
               {"arch": "hecnn", "in_shape": list(SHAPE), "num_classes": 10, "dataset": "tiny"})
    g = torch.Generator().manual_seed(1)
    v = torch.randn((4,) + SHAPE, generator=g)
    Directions(v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1), "random", 0).save(ws / "dirs.safetensors")
    save_file({"images": torch.rand((3,) + SHAPE, generator=g)}, str(ws / "images.safetensors"))
    (ws / "token").write_text(TOKEN + "\n")
    return ws


class Server:
    """``hesig serve`` as a subprocess on a free loopback port (or a given one, for a restart)."""

    def __init__(self, ws: Path, runs: Path, *extra, port: int = 0):
        self.ws, self.runs, self.extra = ws, runs, extra
        self.port_file = runs.parent / f"{runs.name}.port"
        self.port_file.unlink(missing_ok=True)
        self.log = runs.parent / f"{runs.name}.serve.log"
        self.proc = subprocess.Popen(
            [*HESIG, "serve", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--runs", runs,
             "--port", str(port), "--port-file", self.port_file, *SEARCH, *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.time() + 90
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"server did not start: {self.log.read_text()}")
            time.sleep(0.2)
        self.port = int(self.port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def victim(url: str, ws: Path, state: Path, *extra, wait: bool = True):
    cmd = [*HESIG, "victim", "--server", url, "--images", ws / "images.safetensors", "--client-policy", "strict",
           "--state-dir", state, "--quiet", *extra]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out)


def in_process(ws: Path, rows: slice, out: Path) -> Fingerprints:
    """``hesig fingerprint --oracle ckks --client-policy strict`` on the image file, through the same engine."""
    target = load_model(ws / "model")
    images = load_tensors_images(ws)[rows]
    return fingerprint_rows(CKKSFactory(target, client_policy="strict"), Directions.load(ws / "dirs.safetensors").vectors,
                            images, torch.arange(len(images)), search(), out, {"test": "service"}, chunk_size=1,
                            progress=False)


def load_tensors_images(ws: Path) -> torch.Tensor:
    from safetensors.torch import load_file
    return load_file(str(ws / "images.safetensors"))["images"]


def assert_same_fingerprints(a: Fingerprints, b: Fingerprints) -> None:
    """Within CKKS tolerance: encryption is randomised, so a query within the noise (~1e-6
    relative) of the boundary may come out the other way and move ε by one refinement step; on
    these inputs the files have come out bit-identical (README: same answers as in process)."""
    assert torch.equal(a.indices, b.indices) and torch.equal(a.censored, b.censored)
    assert torch.allclose(a.eps, b.eps, rtol=2 * 0.3, atol=1e-6), (a.eps, b.eps)


def job_file(runs: Path) -> Path:
    files = sorted(runs.glob("*.safetensors"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> Fingerprints:
    """The in-process ``--oracle ckks`` fingerprints of the three images (the same engine the CLI runs)."""
    return in_process(tiny, slice(0, 3), tmp_path_factory.mktemp("ref") / "inproc.safetensors")


def rows_of(fp: Fingerprints, rows: slice) -> Fingerprints:
    return Fingerprints(fp.eps[rows], fp.censored[rows], fp.queries[rows], fp.indices[rows], {})


def test_two_victims_at_once_get_the_in_process_fingerprints(tiny, reference, tmp_path):
    # The server splits each image over 2 processes, and so does the first victim's client: the
    # same fingerprints as one process in process.
    server = Server(tiny, tmp_path / "runs", "--ckks-processes", "2")
    try:
        # Two victims at once, each with its own images, key and job: neither sees the other's.
        first = victim(server.url, tiny, tmp_path / "v1", "--indices", "0:2", "--ckks-processes", "2", wait=False)
        second = victim(server.url, tiny, tmp_path / "v2", "--indices", "2", wait=False)
        outs = []
        for proc in (first, second):
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            outs.append(json.loads(out))
    finally:
        server.stop()
    assert outs[0]["job"] != outs[1]["job"] and all(o["task"] == "done" and o["sessions"] == 1 for o in outs)
    for summary, rows in zip(outs, (slice(0, 2), slice(2, 3))):
        net = Fingerprints.load(tmp_path / "runs" / f"{summary['job']}.safetensors")
        assert net.meta["transport"] == "http" and net.meta["oracle"] == "ckks" and net.meta["dataset"] == "images-file"
        assert_same_fingerprints(net, rows_of(reference, rows))
        # the victim's own accounting of the wire matches the server's
        assert summary["queries_answered"] == summary["queries_total"] == int(net.queries.sum())
        costs = net.meta["oracle_costs"]
        assert costs["upload_bytes"] == summary["bytes_up"] - costs["context_bytes"] - costs["reply_bytes"]
        assert costs["download_bytes"] == summary["bytes_down"] and costs["key_pairs"] == 1
    assert not list((tmp_path / "v1").glob("*.key"))  # the job key is dropped once the job is done


def _wait_for_chunks(runs: Path, count: int, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(list(runs.glob("*.chunks/chunk-*.safetensors"))) < count:
        assert time.time() < deadline, f"{count} chunks were not written in time"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)


def test_killing_either_side_mid_job_resumes_to_the_same_file(tiny, reference, tmp_path):
    """kill -9 the server after the first image, restart it (the victim retries until it is back and
    opens a new session for its job); kill -9 the victim after the second, rerun its command."""
    runs, state = tmp_path / "runs", tmp_path / "v"
    server = Server(tiny, runs)
    proc = victim(server.url, tiny, state, wait=False)
    try:
        _wait_for_chunks(runs, 1, proc)
        server.stop(signal.SIGKILL)
        time.sleep(1.0)
        server = Server(tiny, runs, port=server.port)
        _wait_for_chunks(runs, 2, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert list(state.glob("*.key"))  # the victim's job key survives it
        summary = victim(server.url, tiny, state)  # the same command again
    finally:
        proc.kill()
        server.stop()
    log = server.log.read_text()
    assert "re-opened" in log and "2 of 3 images already fingerprinted" in log, log
    net = Fingerprints.load(job_file(runs))
    assert summary["job"] == job_file(runs).stem and summary["inputs_sent"] == 1
    assert_same_fingerprints(net, reference)
    assert not list(runs.glob("*.chunks")) and not list((runs / ".uploads").iterdir())


def test_the_default_client_policy_stops_the_job_with_its_reason(tiny, tmp_path):
    """strict+budget:1+fresh-keys answers one result per key: the victim refuses the second (exit 3,
    one line), the server's job stops, nothing is written."""
    server = Server(tiny, tmp_path / "runs")
    try:
        proc = subprocess.run([str(c) for c in [*HESIG, "victim", "--server", server.url, "--images",
                                                tiny / "images.safetensors", "--indices", "0",
                                                "--state-dir", tmp_path / "v", "--quiet"]],
                              capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert proc.returncode == 3 and "budget" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "refused to answer" in server.log.read_text() and not list((tmp_path / "runs").glob("*.safetensors"))


def _owner_prior(ws: Path) -> Path:
    """The owner's prior: its own 16 images (not the victim's) fingerprinted in plaintext at rtol 1e-3."""
    target, dirs = load_model(ws / "model"), Directions.load(ws / "dirs.safetensors")
    owner = torch.rand((16,) + SHAPE, generator=torch.Generator().manual_seed(7))
    out = ws / "prior.safetensors"
    if not out.exists():
        # Filed as a train split (the owner's data; a fingerprint file names one of hesig's datasets).
        config = {"dataset": "mnist", "split": "train", "model_hash": target.hash, "directions_hash": dirs.hash}
        fingerprint_rows(PlaintextFactory(target), dirs.vectors, owner, torch.arange(16),
                         BoundarySearch(60.0, coarse_points=8, rtol=1e-3), out, config, chunk_size=16, progress=False)
    return out


def test_the_server_runs_the_prior_guided_search(tiny, tmp_path):
    """hesig serve --prior FILE --prior-steps 2: exactly 2 queries per pair over HTTP, the brackets
    of the same search run in process through CKKS; a prior of other directions is refused at start."""
    prior = _owner_prior(tiny)
    server = Server(tiny, tmp_path / "runs", "--prior", prior, "--prior-steps", "2")
    try:
        summary = victim(server.url, tiny, tmp_path / "v", "--indices", "0:2")
    finally:
        server.stop()
    net = Fingerprints.load(tmp_path / "runs" / f"{summary['job']}.safetensors")
    assert net.meta["search"]["kind"] == "prior" and net.meta["search"]["steps"] == 2
    assert (net.queries == 2).all() and summary["queries_total"] == 2 * 2 * 4 and not net.censored.all()
    target = load_model(tiny / "model")
    search = prior_search(prior, 2, target.hash, Directions.load(tiny / "dirs.safetensors").hash)
    local = fingerprint_rows(CKKSFactory(target, client_policy="strict"), Directions.load(tiny / "dirs.safetensors").vectors,
                             load_tensors_images(tiny)[:2], torch.arange(2), search, tmp_path / "local.safetensors",
                             {"test": "service"}, chunk_size=1, progress=False)
    # Knots are ε values the owner measured on other images: no victim ε within CKKS noise of one here.
    assert torch.equal(net.eps, local.eps) and torch.equal(net.censored, local.censored)
    other = tmp_path / "other_dirs.safetensors"
    v = torch.randn((4,) + SHAPE, generator=torch.Generator().manual_seed(9))
    Directions(v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1), "random", 9).save(other)
    proc = subprocess.run([str(c) for c in [*HESIG, "serve", "--model", tiny / "model", "--directions", other,
                                            "--runs", tmp_path / "runs2", "--port", "0", "--prior", prior,
                                            "--prior-steps", "2"]], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "directions" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- the protocol's refusals, from a client written against the documented API ----------------------


def _client_context(layout="batched", secret=False):
    import tenseal as ts

    from hesig.oracles.ckks.client import CKKSClient
    client = CKKSClient(num_outputs=10, policy="strict", layout=layout)
    client.set_conv_geometry(7, 3)
    if not secret:
        return client, client.context_message()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[31, 26, 26, 26, 26, 26, 26, 31])
    ctx.generate_relin_keys()
    blob = ctx.serialize(save_secret_key=True)
    return client, wire.pack("context", wire.context_id(blob), [blob], layout="batched")


def _declaration(owner="o" * 40, **changes):
    return {"owner": owner, "dataset": "images-file", "split": "file", "split_hash": "abc", "indices": [0],
            "layout": "batched", "client_policy": "strict", **changes}


def _one_line(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail and fragment in detail, detail


def _raw_put(port: int, path: str, length: int, body: bytes, read: bool) -> bytes:
    """A PUT that declares ``length`` bytes and sends ``body`` (fewer, for a cut-off upload)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode() + body)
        return sock.recv(200) if read else b""


def test_protocol_refusals_change_nothing(tiny, tmp_path):
    server = Server(tiny, tmp_path / "runs", "--token-file", tiny / "token", "--max-upload-mb", "64")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.Client(base_url=server.url, headers=auth, timeout=120)
    try:
        _one_line(httpx.get(f"{server.url}/v1/info"), 401, "token")
        _one_line(httpx.get(f"{server.url}/v1/info", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}), 401)
        info = http.get("/v1/info").json()
        assert info["in_shape"] == list(SHAPE) and info["num_classes"] == 10
        for bad, fragment in ((_declaration(owner="short"), "owner"), (_declaration(indices=[1, 1]), "repeat"),
                              (_declaration(indices=[-1]), "indices"), (_declaration(layout="diagonal"), "layout"),
                              ({**_declaration(), "extra": 1}, "unknown field"), ([1, 2], "JSON object")):
            _one_line(http.post("/v1/sessions", json=bad), 400, fragment)
        _one_line(http.post("/v1/sessions", content=b"{not json"), 400, "not JSON")
        sid = http.post("/v1/sessions", json=_declaration()).json()["session"]
        base = f"/v1/sessions/{sid}"
        _one_line(http.get("/v1/sessions/nonexistent/task"), 404, "unknown session")
        _one_line(http.get(f"{base}/task", params={"wait": 100}), 422)
        assert http.get(f"{base}/task", params={"wait": 0}).json() == {"task": "wait"}  # no context yet
        _one_line(http.put(f"{base}/inputs/0", content=b"x" * 10), 409, "not what this session waits for")
        _one_line(http.put(f"{base}/contexts", content=b"garbage"), 422, "context refused")
        _, secret = _client_context(secret=True)
        _one_line(http.put(f"{base}/contexts", content=secret), 422, "secret key")
        _, compact = _client_context(layout="compact")
        _one_line(http.put(f"{base}/contexts", content=compact), 422, "layout")
        client, context = _client_context()
        assert http.put(f"{base}/contexts", content=context).status_code == 201
        task = http.get(f"{base}/task", params={"wait": 30}).json()
        assert task == {"task": "input", "row": 0, "index": 0}
        image = load_tensors_images(tiny)[0].double().numpy()
        message = client.encrypt(image, session=0)
        # an oversized upload is refused from its Content-Length, before any of the body is read
        status = _raw_put(server.port, f"{base}/inputs/0", 100 << 20, b"x" * 1000, read=True)
        assert status.startswith(b"HTTP/1.1 413"), status
        # a truncated upload: the connection closes half way; nothing changes
        _raw_put(server.port, f"{base}/inputs/0", len(message), message[:len(message) // 2], read=False)
        time.sleep(1.0)
        assert http.get(f"{base}/task", params={"wait": 5}).json() == task
        _one_line(http.put(f"{base}/inputs/0", content=message[:-10]), 422, "input refused")
        _one_line(http.put(f"{base}/inputs/1", content=message), 409)
        assert http.put(f"{base}/inputs/0", content=message).status_code == 202
        task = http.get(f"{base}/task", params={"wait": 30}).json()
        assert task.get("task") == "result" and task["seq"] == 1, task
        _one_line(http.get(f"{base}/results/2"), 409)
        result = http.get(f"{base}/results/1").content
        assert len(result) == task["bytes"]
        reply = client.answer(result)
        _one_line(http.put(f"{base}/results/1/reply", content=reply + b"\0"), 400, "bytes")
        other = http.post("/v1/sessions", json=_declaration(owner="p" * 40)).json()["session"]
        _one_line(http.put(f"/v1/sessions/{other}/results/1/reply", content=reply), 409)  # not the other's result
        assert http.put(f"{base}/results/1/reply", content=reply).status_code == 200
        _one_line(http.put(f"{base}/results/1/reply", content=reply), 409, "replayed")  # a replay changes nothing
        assert http.delete(f"{base}").status_code == 200
        final = http.get(f"{base}/task", params={"wait": 30}).json()
        assert final["task"] == "failed" and "ended" in final["reason"]
        assert http.get(f"{base}").json()["evaluations"] == 1
    finally:
        http.close()
        server.stop()
    left = [(p.name, p.stat().st_size) for p in (tmp_path / "runs" / ".uploads").iterdir()]
    assert not left, left


def test_the_server_process_holds_no_client_code():
    code = ("import sys, hesig.service.app, hesig.service.hub, hesig.service.run; "
            "print(sorted(m for m in sys.modules if m.startswith('hesig') and ('client' in m or 'victim' in m)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_bad_input_is_one_line(cli, tiny, workspace, tmp_path):
    code, _, err = cli.run("victim", "--server", "http://127.0.0.1:9")
    cli.assert_error(code, err, "--dataset", "--images")
    code, _, err = cli.run("victim", "--server", "ftp://x", "--images", tiny / "images.safetensors")
    cli.assert_error(code, err, "http://")
    code, _, err = cli.run("victim", "--server", "http://127.0.0.1:9", "--images", tiny / "model" / "model.json")
    cli.assert_error(code, err, "not a safetensors file")
    code, _, err = cli.run("victim", "--server", "http://127.0.0.1:9", "--images", tiny / "images.safetensors",
                           "--retries", "0", "--state-dir", tmp_path / "v")
    cli.assert_error(code, err, "did not answer")
    (tmp_path / "badtoken").write_text("short\n")
    code, _, err = cli.run("serve", "--model", tiny / "model", "--directions", tiny / "dirs.safetensors",
                           "--runs", tmp_path / "r", "--token-file", tmp_path / "badtoken")
    cli.assert_error(code, err, "token file")
    code, _, err = cli.run("serve", "--model", workspace / "model", "--directions", workspace / "dirs.safetensors",
                           "--runs", tmp_path / "r")
    cli.assert_error(code, err, "CKKS oracle evaluates")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli.run("serve", "--model", tiny / "model", "--directions", tiny / "dirs.safetensors",
                               "--runs", tmp_path / "r", "--port", busy.getsockname()[1])
        cli.assert_error(code, err, "cannot listen")


# -- a hostile server: the victim acts on nothing it has not checked -----------------------------


def _victim_against(handler, tmp_path):
    from hesig.service.victim import Victim
    images = torch.rand((1,) + SHAPE, generator=torch.Generator().manual_seed(0))
    tmp_path.mkdir(parents=True, exist_ok=True)
    v = Victim("http://hostile.invalid", images, {"dataset": "images-file", "split": "file", "split_hash": "x",
                                                 "indices": [0]}, policy="strict", owner_file=tmp_path / "k",
               retries=0, prefetch=False)
    v.http = httpx.Client(base_url="http://hostile.invalid", transport=httpx.MockTransport(handler))
    return v


INFO = {"in_shape": list(SHAPE), "num_classes": 10, "conv_kernel": 7, "conv_stride": 3}


@pytest.mark.parametrize("task, fragment", [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"task": "input", "row": "0; rm -rf /"}', "malformed task"),
    (b'{"task": "result", "row": 0, "seq": -1}', "without a valid seq"),
    (b'{"task": "input", "row": 7}', "rows 0..0"),
    (b'{"task": "teleport", "row": 0}', "malformed task"),
])
def test_the_victim_refuses_what_a_hostile_server_sends(tmp_path, task, fragment):
    from hesig.core.errors import HesigError

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/info":
            return httpx.Response(200, json=INFO)
        if path == "/v1/sessions":
            return httpx.Response(201, json={"session": "s1", "job": "j1", "rows": 1})
        if path.endswith("/contexts"):
            return httpx.Response(201, json={"context_id": "c"})
        if path.endswith("/task"):
            return httpx.Response(200, content=task)
        return httpx.Response(500)

    victim_ = _victim_against(handler, tmp_path)
    with pytest.raises(HesigError) as err:
        victim_.run()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_session_slots_are_limited_and_silent_sessions_give_theirs_back(tiny, tmp_path):
    from hesig.service.hub import Hub, ServeSettings
    from hesig.service.protocol import RequestRefused
    hub = Hub(ServeSettings(tiny / "model", tiny / "dirs.safetensors", tmp_path / "runs", search(), max_sessions=1,
                            victim_timeout=1.0), log=lambda m: None)
    first = hub.open_session(_declaration(owner="a" * 40))
    with pytest.raises(RequestRefused) as full:  # another victim: no slot left
        hub.open_session(_declaration(owner="b" * 40))
    assert full.value.status == 503 and hub.session(first["session"]).state == "open"
    again = hub.open_session(_declaration(owner="a" * 40))  # the same owner re-opening its job takes its own slot
    assert again["job"] == first["job"] and hub.session(first["session"]).state == "ended"
    time.sleep(1.5)  # that victim never sends a context: past the timeout its slot is free again
    other = hub.open_session(_declaration(owner="b" * 40))
    assert hub.session(again["session"]).state == "ended" and hub.session(other["session"]).state == "open"
    hub.shutdown()


def test_each_victim_draws_a_secret_flooding_seed(tmp_path):
    seeds = {_victim_against(lambda r: httpx.Response(500), tmp_path / str(i)).policy.seed for i in range(3)}
    assert len(seeds) == 3  # never the policy's reproducible default: an attacker could replay the noise
