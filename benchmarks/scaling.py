"""Scaling benchmark (issue 21): the fingerprint job on 1 and 2 Ray workers, and the plan for 10,000 images.

    python benchmarks/scaling.py --out benchmarks/scaling.json          # ~10 min on 2 idle cores
    python benchmarks/scaling.py --quick --out /tmp/scaling.json        # smoke test, ~2 min

All numbers come from one run on one machine (a local Ray instance started by the script):

1. **CKKS**: the same ``--ckks-images`` MNIST test images (hecnn, 100 random directions, the
   search of benchmarks/ckks.py: 40 coarse points, ``auto`` points per round, rtol 1e-3, one image
   per chunk) fingerprinted through the TenSEAL oracle on 1 and on 2 Ray workers (1 CPU each);
   wall-clock seconds end to end (actor start included) and the speed-up; the per-image cost
   (wall and CPU seconds inside the worker, and the oracle's own split: encryption, server
   setup, evaluation); whether the two files agree (CKKS noise: within the search tolerance).
2. **Plaintext**: ``--plain-images`` test images in chunks of ``--plain-chunk`` in-process and on
   1 and 2 Ray workers (on a GPU worker each when CUDA is present); the files are compared byte
   for byte.
3. **The machine's own ceiling**: the same CKKS images fingerprinted without Ray, by one
   ``hesig fingerprint`` process (1 thread) and by two such processes at once, each on half of the
   images. Two busy processes on this 2-vCPU virtual machine slow each other down with no
   scheduler at all (shared caches, memory bandwidth, the host); this ratio is the most any
   executor can reach here, and the Ray speed-up is reported against it.
4. **The plan**: from the measured per-image CPU cost, how many workers (1 CPU, the measured
   peak memory each) and nodes of a given size fingerprint 10,000 MNIST test images through CKKS
   in under an hour, with the arithmetic.

``os.getloadavg()`` is recorded before and after every phase: on a shared machine the other load
takes CPU from the workers and the speed-up with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hesig.jobs.fingerprint import fingerprint_job
from hesig.jobs.models import directions_job, train_model_job
from hesig.jobs.ray_executor import RayExecutor
from hesig.signature.fingerprints import Fingerprints

#: Fraction of the hour the plan counts on the workers computing (the rest: start, tail, stragglers).
UTILISATION = 0.85
CKKS_SEARCH = {"coarse_points": 40, "points_per_round": "auto", "rtol": 1e-3, "atol": 0.0}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Timed:
    """Wraps a chunk task: adds the worker's CPU seconds, wall seconds and peak RSS to the chunk's metadata."""

    def __init__(self, compute):
        self.compute = compute

    def __call__(self, i):
        t0, c0 = time.perf_counter(), time.process_time()
        tensors, meta = self.compute(i)
        meta = {**meta, "bench_wall": time.perf_counter() - t0, "bench_cpu": time.process_time() - c0,
                "bench_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bench_pid": os.getpid()}
        return tensors, meta


class TimedRay(RayExecutor):
    """The Ray executor with :class:`Timed` chunks; keeps every chunk's metadata for the report."""

    def __init__(self, **options):
        super().__init__(**options)
        self.chunk_meta: list[dict] = []

    def map(self, compute, tasks):
        for task, (tensors, meta) in super().map(Timed(compute), tasks):
            self.chunk_meta.append(meta)
            yield task, (tensors, {k: v for k, v in meta.items() if not k.startswith("bench_")})


def run(model, dirs, n, out, *, executor=None, oracle="plaintext", chunk_size=None, device="auto", **search):
    t0 = time.perf_counter()
    summary = fingerprint_job(model, dirs, "mnist", "test", out, oracle=oracle, indices=f"0:{n}", chunk_size=chunk_size,
                              executor=executor, device=device, progress=False, **search)
    return time.perf_counter() - t0, summary


def processes_at_once(model, dirs, ranges: list[tuple[int, int]], work: Path, tag: str) -> dict:
    """``hesig fingerprint --oracle ckks`` (in-process executor, 1 thread) on each index range, all
    at once as separate processes: wall seconds until the last one ends, and their CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    search = ["--coarse-points", str(CKKS_SEARCH["coarse_points"]), "--points-per-round",
              str(CKKS_SEARCH["points_per_round"]), "--rtol", str(CKKS_SEARCH["rtol"]), "--atol", str(CKKS_SEARCH["atol"])]
    hesig = [sys.executable, "-m", "hesig.cli"] if not Path(sys.executable).with_name("hesig").exists() \
        else [str(Path(sys.executable).with_name("hesig"))]
    before, c0, t0 = load(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    procs = [subprocess.Popen([*hesig, "fingerprint", "--oracle", "ckks", "--model", str(model), "--directions", str(dirs),
                               "--indices", f"{a}:{b}", "--out", str(work / f"{tag}_{a}_{b}.safetensors"),
                               "--client-policy", "strict", "--quiet", *search], env=env)
             for a, b in ranges]
    codes = [p.wait() for p in procs]
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise SystemExit(f"a hesig fingerprint process failed: exit codes {codes}")
    return {"processes": len(ranges), "wall_seconds": round(wall, 1), "loadavg_before": before, "loadavg_after": load(),
            "cpu_seconds_sum": round((c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime), 1)}


def same_bytes(a: Path, b: Path) -> bool:
    fa, fb = Fingerprints.load(a), Fingerprints.load(b)
    tensors = all(torch.equal(getattr(fa, k), getattr(fb, k)) for k in ("eps", "censored", "queries", "indices"))
    drop = lambda m: {k: v for k, v in m.items() if k != "compute_seconds"}  # noqa: E731
    return tensors and drop(fa.meta) == drop(fb.meta)


def within_tolerance(a: Path, b: Path, rtol: float) -> dict:
    fa, fb = Fingerprints.load(a), Fingerprints.load(b)
    both = ~fa.censored & ~fb.censored
    rel = ((fa.eps - fb.eps).abs() / torch.maximum(fa.eps, fb.eps))[both]
    return {"censored_identical": bool(torch.equal(fa.censored, fb.censored)),
            "queries_identical": bool(torch.equal(fa.queries, fb.queries)),
            "eps_bit_identical_fraction": float((fa.eps == fb.eps).float().mean()),
            "eps_max_relative_difference": float(rel.max()) if rel.numel() else 0.0,
            "eps_within_2rtol": bool((rel <= 2 * rtol).all()), "rtol": rtol}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="an MNIST hecnn checkpoint (default: train one, 1 epoch, seed 0)")
    ap.add_argument("--ckks-images", type=int, default=8)
    ap.add_argument("--directions", type=int, default=100)
    ap.add_argument("--plain-images", type=int, default=4000)
    ap.add_argument("--plain-chunk", type=int, default=500)
    ap.add_argument("--target-images", type=int, default=10_000)
    ap.add_argument("--node-cpus", type=int, default=32)
    ap.add_argument("--node-memory-gb", type=float, default=128)
    ap.add_argument("--quick", action="store_true", help="2 CKKS images, 10 directions, 1000 plaintext images")
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.quick:
        args.ckks_images, args.directions, args.plain_images = 2, 10, 1000
    work = Path(args.work or tempfile.mkdtemp(prefix="hesig-scaling-"))
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                                "cuda": torch.cuda.is_available(), "loadavg_at_start": load()},
                    "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")}}
    model = args.model
    if model is None:
        model = str(work / "hecnn")
        train_model_job("mnist", "hecnn", model, epochs=1, seed=0, progress=False)
    dirs = str(work / "dirs.safetensors")
    directions_job("random", args.directions, dirs, dataset="mnist", seed=0)
    gpu = torch.cuda.is_available()

    # -- CKKS: 1 and 2 workers ------------------------------------------------------------------
    # The cluster is started once, as a user's would be ('ray start --head'); its start is timed on its own.
    import ray
    t0 = time.perf_counter()
    RayExecutor(workers=2).connect()
    cluster_start = time.perf_counter() - t0
    ckks: dict = {"images": args.ckks_images, "directions": args.directions, "search": CKKS_SEARCH, "runs": {},
                  "cluster_start_seconds": round(cluster_start, 1)}
    for workers in (1, 2):
        ex = TimedRay(workers=workers, cpus_per_worker=1)
        before = load()
        seconds, summary = run(model, dirs, args.ckks_images, work / f"ckks_{workers}.safetensors", executor=ex,
                               oracle="ckks", chunk_size=1, client_policy="strict", **CKKS_SEARCH)
        metas = ex.chunk_meta
        ckks["runs"][str(workers)] = {
            "workers": workers, "wall_seconds": round(seconds, 1), "loadavg_before": before, "loadavg_after": load(),
            "worker_processes": len({m["bench_pid"] for m in metas}),
            "chunk_wall_seconds_sum": round(sum(m["bench_wall"] for m in metas), 1),
            "chunk_cpu_seconds_sum": round(sum(m["bench_cpu"] for m in metas), 1),
            "worker_peak_rss_mb": round(max(m["bench_rss_mb"] for m in metas), 1),
            "oracle_costs": summary.get("oracle_costs"), "queries_total": summary.get("queries_total")}
        print(json.dumps({"ckks": ckks["runs"][str(workers)]}), file=sys.stderr)
    one, two = ckks["runs"]["1"], ckks["runs"]["2"]
    ckks["speedup_2_workers"] = round(one["wall_seconds"] / two["wall_seconds"], 3)
    ckks["target_speedup"] = 1.8
    # The same images without Ray: one process, then two at once on the halves.
    n = args.ckks_images
    ceiling = {"1": processes_at_once(model, dirs, [(0, n)], work, "noray1"),
               "2": processes_at_once(model, dirs, [(0, n // 2), (n // 2, n)], work, "noray2")}
    ceiling["speedup_2_processes"] = round(ceiling["1"]["wall_seconds"] / ceiling["2"]["wall_seconds"], 3)
    ceiling["cpu_seconds_increase_2_processes"] = round(ceiling["2"]["cpu_seconds_sum"] / ceiling["1"]["cpu_seconds_sum"] - 1, 3)
    ckks["without_ray"] = ceiling
    ckks["ray_speedup_over_machine_ceiling"] = round(ckks["speedup_2_workers"] / ceiling["speedup_2_processes"], 3)
    ckks["cpu_seconds_increase_2_workers"] = round(two["chunk_cpu_seconds_sum"] / one["chunk_cpu_seconds_sum"] - 1, 3)
    costs = one["oracle_costs"] or {}
    ckks["per_image"] = {
        "wall_seconds": round(one["chunk_wall_seconds_sum"] / n, 2),
        "cpu_seconds": round(one["chunk_cpu_seconds_sum"] / n, 2),
        **{k.replace("_seconds", "_seconds_per_image"): round(v / n, 2) for k, v in costs.items() if k.endswith("seconds")},
        "evaluations_per_image": round(costs.get("evaluations", 0) / n, 2),
        "upload_bytes_per_image": round(costs.get("upload_bytes", 0) / n),
        "worker_peak_rss_mb": one["worker_peak_rss_mb"]}
    ckks["files_1_vs_2_workers"] = within_tolerance(work / "ckks_1.safetensors", work / "ckks_2.safetensors",
                                                    CKKS_SEARCH["rtol"])
    report["ckks"] = ckks

    # -- plaintext: in-process, 1 and 2 workers -------------------------------------------------
    plain: dict = {"images": args.plain_images, "chunk_size": args.plain_chunk, "directions": args.directions,
                   "gpu_workers": gpu, "runs": {}}
    run(model, dirs, 10, work / "warmup.safetensors")  # the dataset cache and torch's first calls, untimed
    before = load()
    seconds, _ = run(model, dirs, args.plain_images, work / "plain_inproc.safetensors", chunk_size=args.plain_chunk)
    plain["runs"]["in-process"] = {"wall_seconds": round(seconds, 1), "loadavg_before": before, "loadavg_after": load(),
                                   "torch_threads": torch.get_num_threads()}
    for workers in (1, 2):
        ex = TimedRay(workers=workers, cpus_per_worker=1, gpus_per_worker=(1 / workers if gpu else 0))
        before = load()
        seconds, _ = run(model, dirs, args.plain_images, work / f"plain_{workers}.safetensors", executor=ex,
                         chunk_size=args.plain_chunk)
        plain["runs"][str(workers)] = {
            "workers": workers, "wall_seconds": round(seconds, 1), "loadavg_before": before, "loadavg_after": load(),
            "chunk_wall_seconds_sum": round(sum(m["bench_wall"] for m in ex.chunk_meta), 1),
            "same_bytes_as_in_process": same_bytes(work / f"plain_{workers}.safetensors", work / "plain_inproc.safetensors")}
    plain["speedup_2_workers"] = round(plain["runs"]["1"]["wall_seconds"] / plain["runs"]["2"]["wall_seconds"], 3)
    plain["per_image_wall_seconds_1_worker"] = round(plain["runs"]["1"]["chunk_wall_seconds_sum"] / args.plain_images, 5)
    report["plaintext"] = plain
    ray.shutdown()

    # -- the plan -----------------------------------------------------------------------------------
    cpu_per_image = ckks["per_image"]["cpu_seconds"]
    efficiency = min(1.0, ckks["speedup_2_workers"] / 2)
    rss_gb = ckks["per_image"]["worker_peak_rss_mb"] / 1024
    per_node = min(args.node_cpus, int(args.node_memory_gb * 0.9 // rss_gb))
    core_seconds = args.target_images * cpu_per_image
    usable = UTILISATION * 3600  # headroom for actor start, the tail of the last chunks, slower nodes
    workers_needed = math.ceil(core_seconds / usable)
    nodes = math.ceil(workers_needed / per_node)
    per_worker_images = math.ceil(args.target_images / (nodes * per_node))
    hours = per_worker_images * cpu_per_image / 3600
    report["plan_10000_mnist_ckks_in_one_hour"] = {
        "cpu_seconds_per_image": cpu_per_image,
        "core_hours": round(core_seconds / 3600, 1),
        "utilisation_assumed": UTILISATION,
        "workers_needed": workers_needed,
        "node": {"cpus": args.node_cpus, "memory_gb": args.node_memory_gb,
                 "workers_per_node": per_node, "worker_peak_gb": round(rss_gb, 2)},
        "nodes": nodes,
        "images_per_worker": per_worker_images,
        "hours_at_measured_cpu_cost": round(hours, 2),
        "measured_parallel_efficiency_2_workers": round(efficiency, 3),
        "arithmetic": (f"{args.target_images} images x {cpu_per_image:.1f} CPU-s = {core_seconds / 3600:.1f} core-hours "
                       f"-> {core_seconds:.0f} s / ({UTILISATION} x 3600 s) = {workers_needed} one-CPU workers; a node of {args.node_cpus} CPUs / "
                       f"{args.node_memory_gb:g} GB holds min({args.node_cpus}, 0.9 x {args.node_memory_gb:g} / "
                       f"{rss_gb:.2f} GB) = {per_node} workers -> {nodes} nodes = {nodes * per_node} workers, "
                       f"{per_worker_images} images each x {cpu_per_image:.1f} s = {hours * 60:.0f} min"),
    }
    report["machine"]["loadavg_at_end"] = load()
    report["machine"]["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
