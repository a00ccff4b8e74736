"""The encrypted oracle as a service (issue 20): in process vs over HTTP, bytes, server memory, load, soak.

    python benchmarks/service.py --model runs/mnist-hecnn/model \
        --directions runs/mnist-hecnn/directions.safetensors --out benchmarks/service.json

(model: ``hesig train-model --dataset mnist --arch hecnn --seed 0``; directions: ``hesig directions
--dataset mnist --count 100``). One run on one machine, MNIST test images, 100 directions, the
search of benchmarks/ckks.json (rtol 1e-3, 40 coarse points, auto points per round), client policy strict, batched layout:

1. ``in_process``: ``fingerprint_rows`` with the ``--oracle ckks`` factory on ``--images`` images
   (client and server in this process, as ``hesig fingerprint --oracle ckks``);
   ``in_process_repeat``: the same job once more after phase 2, compared with the first (CKKS
   encryption is randomised: the yardstick for "the same answers"); overheads are against the
   mean of the two in-process timings;
2. ``http_one_victim``: ``hesig serve`` and one ``hesig victim`` (two processes, loopback) on the
   same images: seconds per fingerprint (wall, from the victim's start; and the protocol's, from
   its first request), overhead against 1, the fingerprints compared with 1, bytes each way from
   the victim's count of the wire and from the server's cost accounting, the server's peak RSS
   (VmHWM); ``http_one_victim_no_prefetch`` the same with ``--no-prefetch`` (the victim encrypts
   an image only when asked for it, as the in-process client does);
3. ``http_concurrent``: a fresh server, ``--victims`` victims at once (one image each): all
   complete, wall time, throughput, the server's peak RSS;
4. ``soak``: a fresh server, two victims at a time with one-image jobs, back to back, for
   ``--soak-seconds``: jobs completed, failures, the server's RSS sampled every 5 s (lowest and
   highest of the second and the last quarter: a leak would raise the last quarter's lowest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from hesig.core.io import atomic_write_json
from hesig.data import load_dataset
from hesig.jobs.fingerprint import fingerprint_rows
from hesig.models import load_model
from hesig.oracles.ckks.oracle import CKKSFactory
from hesig.signature.directions import Directions
from hesig.signature.fingerprints import Fingerprints
from hesig.signature.search import BoundarySearch

HESIG = [sys.executable, "-c", "from hesig.cli import main; main()"]
#: benchmarks/ckks.json's search: a coarse pass of floor(4095 / 100) points and 'auto' points per
#: round fill the slots, so a fingerprint takes 3 homomorphic evaluations.
SEARCH = {"eps_max": 60.0, "rtol": 1e-3, "coarse_points": 40, "points_per_round": "auto"}


def proc_status(pid: int, key: str) -> float | None:
    """VmRSS / VmHWM of a process in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class Server:
    def __init__(self, args, runs: Path, *extra):
        runs.mkdir(parents=True, exist_ok=True)
        self.port_file, self.log = runs / "port", runs.parent / f"{runs.name}.log"
        cmd = [*HESIG, "serve", "--model", args.model, "--directions", args.directions, "--runs", runs, "--port", "0",
               "--port-file", self.port_file, "--eps-max", SEARCH["eps_max"], "--rtol", SEARCH["rtol"],
               "--coarse-points", SEARCH["coarse_points"], "--points-per-round", SEARCH["points_per_round"], *extra]
        self.proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"server did not start: {self.log.read_text()}")
            time.sleep(0.2)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(5.0):
            rss = proc_status(self.proc.pid, "VmRSS")
            if rss is not None:
                self.samples.append((round(time.perf_counter() - self._t0, 1), round(rss)))

    def peak_mb(self) -> float:
        return round(proc_status(self.proc.pid, "VmHWM") or float("nan"))

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        self.proc.wait(timeout=120)


def victim(url: str, indices: str, state: Path, data_root: str | None, *extra) -> subprocess.Popen:
    cmd = [*HESIG, "victim", "--server", url, "--dataset", "mnist", "--split", "test", "--indices", indices,
           "--client-policy", "strict", "--state-dir", state, "--quiet", *extra]
    if data_root:
        cmd += ["--data-root", data_root]
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"victim failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return json.loads(out)


def compare(a: Fingerprints, b: Fingerprints) -> dict:
    """Which tensors of two fingerprint files are identical; how many ε differ, by how much."""
    both = ~(a.censored | b.censored)
    return {"identical": {k: bool(torch.equal(getattr(a, k), getattr(b, k)))
                          for k in ("eps", "censored", "queries", "indices")},
            "pairs": int(a.eps.numel()), "pairs_with_different_eps": int((a.eps != b.eps).sum()),
            "max_relative_eps_difference_uncensored":
                float(((a.eps - b.eps).abs() / b.eps)[both].max()) if both.any() else 0.0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--images", type=int, default=3, help="images fingerprinted in process and over HTTP")
    ap.add_argument("--victims", type=int, default=8, help="concurrent victims in the load phase")
    ap.add_argument("--soak-seconds", type=float, default=300.0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    target, dirs = load_model(args.model), Directions.load(args.directions)
    data = load_dataset("mnist", "test", args.data_root)
    work = Path(tempfile.mkdtemp(prefix="hesig-service-bench-"))
    n = args.images
    result: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
                    "model_hash": target.hash, "directions_hash": dirs.hash, "directions": dirs.count,
                    "search": SEARCH, "client_policy": "strict", "layout": "batched"}
    try:
        # 1. in process ------------------------------------------------------------------------
        search = BoundarySearch(SEARCH["eps_max"], coarse_points=SEARCH["coarse_points"], rtol=SEARCH["rtol"],
                                points_per_round=SEARCH["points_per_round"])
        t0 = time.perf_counter()
        local = fingerprint_rows(CKKSFactory(target, client_policy="strict"), dirs.vectors, data.images[:n],
                                 data.indices[:n], search, work / "inproc.safetensors", {"bench": "service"},
                                 chunk_size=1, progress=False)
        seconds = time.perf_counter() - t0
        result["in_process"] = {"images": n, "seconds": round(seconds, 1), "seconds_per_fingerprint": round(seconds / n, 2),
                                "oracle_costs": local.meta["oracle_costs"]}
        print(json.dumps(result["in_process"]), file=sys.stderr)

        # 2. one victim over HTTP, with and without encrypting ahead -------------------------------
        for name, extra in (("http_one_victim", ()), ("http_one_victim_no_prefetch", ("--no-prefetch",))):
            server = Server(args, work / name)
            t0 = time.perf_counter()
            summary = finish(victim(server.url, f"0:{n}", work / name, args.data_root, *extra))
            seconds = time.perf_counter() - t0
            peak = server.peak_mb()
            server.stop()
            net = Fingerprints.load(work / name / f"{summary['job']}.safetensors")
            costs = net.meta["oracle_costs"]
            result[name] = {
                "images": n, "prefetch": not extra,
                "seconds_wall": round(seconds, 1), "seconds_per_fingerprint_wall": round(seconds / n, 2),
                "seconds_protocol": summary["seconds"], "seconds_per_fingerprint": round(summary["seconds"] / n, 2),
                **compare(net, local),
                "bytes_victim_to_server": summary["bytes_up"], "bytes_server_to_victim": summary["bytes_down"],
                "server_accounting": {k: costs[k] for k in ("context_bytes", "upload_bytes", "download_bytes",
                                                            "reply_bytes")},
                "victim_encrypt_seconds": summary["encrypt_seconds"], "victim_upload_seconds": summary["upload_seconds"],
                "victim_decrypt_seconds": summary["decrypt_seconds"], "server_setup_seconds": costs["server_setup_seconds"],
                "server_eval_seconds": costs["server_eval_seconds"],
                "evaluations": summary["results_answered"], "queries": summary["queries_answered"],
                "server_peak_rss_mb": peak}
            print(json.dumps(result[name]), file=sys.stderr)

        # the same job in process once more, after the HTTP runs: how far two runs of the randomised
        # encryption differ, and a second timing on a machine whose speed drifts
        t0 = time.perf_counter()
        again = fingerprint_rows(CKKSFactory(target, client_policy="strict"), dirs.vectors, data.images[:n],
                                 data.indices[:n], search, work / "inproc2.safetensors", {"bench": "service"},
                                 chunk_size=1, progress=False)
        result["in_process_repeat"] = {"seconds": round(time.perf_counter() - t0, 1), **compare(again, local)}
        print(json.dumps(result["in_process_repeat"]), file=sys.stderr)
        base = (result["in_process"]["seconds"] + result["in_process_repeat"]["seconds"]) / 2
        result["in_process_seconds_mean"] = round(base, 1)
        for name in ("http_one_victim", "http_one_victim_no_prefetch"):
            r = result[name]
            r["overhead_vs_in_process_wall"] = round(r["seconds_wall"] / base - 1, 4)
            r["overhead_vs_in_process"] = round(r["seconds_protocol"] / base - 1, 4)

        # 3. concurrent victims -------------------------------------------------------------------
        server = Server(args, work / "runs8")
        t0 = time.perf_counter()
        procs = [victim(server.url, str(100 + i), work / f"v8-{i}", args.data_root) for i in range(args.victims)]
        peaks_victim = []
        while any(p.poll() is None for p in procs):
            peaks_victim.append(sum(proc_status(p.pid, "VmRSS") or 0 for p in procs))
            time.sleep(2.0)
        summaries = [finish(p) for p in procs]
        seconds = time.perf_counter() - t0
        peak = server.peak_mb()
        samples = server.samples
        server.stop()
        result["http_concurrent"] = {
            "victims": args.victims, "completed": sum(s["task"] == "done" for s in summaries),
            "seconds": round(seconds, 1), "fingerprints_per_minute": round(60 * len(summaries) / seconds, 2),
            "server_peak_rss_mb": peak, "victims_total_rss_peak_mb": round(max(peaks_victim or [0])),
            "retries": sum(s["retries"] for s in summaries), "server_rss_samples_mb": samples}
        print(json.dumps({k: v for k, v in result["http_concurrent"].items() if k != "server_rss_samples_mb"}),
              file=sys.stderr)

        # 4. soak ------------------------------------------------------------------------------------
        server = Server(args, work / "runs-soak")
        t0, done, failed, next_index, running = time.perf_counter(), 0, 0, 1000, []
        while time.perf_counter() - t0 < args.soak_seconds or running:
            while len(running) < 2 and time.perf_counter() - t0 < args.soak_seconds:
                running.append(victim(server.url, str(next_index), work / "v-soak", args.data_root))
                next_index += 1
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                out, _ = p.communicate()
                done += p.returncode == 0
                failed += p.returncode != 0
            time.sleep(0.5)
        seconds = time.perf_counter() - t0
        peak, samples = server.peak_mb(), server.samples
        server.stop()
        q = len(samples) // 4

        def band(part):  # (lowest, highest) RSS of a quarter of the samples
            values = [v for _, v in part]
            return [min(values), max(values)] if values else None

        # The lowest RSS of a quarter is the server between setups; the first quarter starts before
        # any job (the allocator keeps what the first one took), so the 2nd and 4th are compared.
        result["soak"] = {"seconds": round(seconds, 1), "jobs_completed": done, "jobs_failed": failed,
                          "server_peak_rss_mb": peak, "server_rss_samples_mb": samples,
                          "server_rss_low_high_mb_second_quarter": band(samples[q:2 * q]),
                          "server_rss_low_high_mb_last_quarter": band(samples[3 * q:])}
        print(json.dumps({k: v for k, v in result["soak"].items() if k != "server_rss_samples_mb"}), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
