"""Boundary-search engine benchmark; prints one JSON object.

Measured in one run, on the same model and batch size:

* ``raw_forward_qps``: images/s of the bare batched forward pass of the same (exact, optimised)
  module the oracle evaluates, on one prebuilt batch -- the ceiling for any oracle-driven search.
  ``raw_forward_qps_unoptimised_module`` is the original named module, for comparison.
* ``engine_qps``: oracle queries/s of a full ``BoundarySearch.run`` through ``PlaintextOracle``
  (perturbation building, gathering, argmax and bookkeeping included).
* ``engine_to_raw``: their ratio (target >= 0.8).
* ``job_qps`` / ``job_to_raw``: the same search run as ``hesig fingerprint`` runs it -- chunked, each
  chunk's oracle built and its result written atomically to a run store -- with the device's
  default chunk size (``--job-rows`` rows).
* ``--device cuda``: everything on the GPU (batch 65,536 and 10,000 rows unless given); the JSON
  names the GPU, torch and CUDA versions. Timed GPU loops end with a device synchronisation.
* bisection cost: mean queries per uncensored pair at absolute tolerance ``tol`` against
  log2(ε_max / tol) (target <= 1.1x), for several coarse-pass sizes G.

Usage::

    python benchmarks/search.py [--model runs/mnist-lenet5/model] [--rows 200] [--directions 100] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from hesig.data import load_dataset
from hesig.signature.directions import make_directions
from hesig.models import build_model, load_model
from hesig.models.inference import fast_inference_copy
from hesig.core.defaults import CHUNK_SIZE
from hesig.core.runtime import GPU_EXACT_ENV, apply_gpu_precision
from hesig.jobs.fingerprint import fingerprint_rows
from hesig.oracles import PlaintextOracle
from hesig.oracles.plaintext import PlaintextFactory
from hesig.signature.search import BoundarySearch


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward_qps(model, batches, seconds):
    """Images/s of model(batch).argmax(1), cycling over prebuilt distinct channels-last batches.

    Distinct batches (not one reused, cache-hot batch) because the search never sees the same
    input twice either.
    """
    model = model.eval()
    device = batches[0].device
    with torch.inference_mode():
        model(batches[0]).argmax(1)
        sync(device)
        n, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(batches[i % len(batches)]).argmax(1)
            n += batches[0].shape[0]
            i += 1
        sync(device)
    return n / (time.perf_counter() - t0)


class _Target:
    """What PlaintextFactory needs of a loaded model: the module."""

    def __init__(self, model):
        self.model = model


def job_qps(model, images, dirs, search, device, batch_size, chunk_size):
    """Queries/s of the chunked, resumable fingerprint job (``hesig fingerprint``'s path)."""
    factory = PlaintextFactory(_Target(model), device=device, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fp = fingerprint_rows(factory, dirs, images, torch.arange(len(images)), search, Path(tmp) / "fp.safetensors",
                              {"benchmark": "search"}, chunk_size=chunk_size, progress=False)
        seconds = time.perf_counter() - t0
    return int(fp.queries.sum()) / seconds, seconds


def write_profile(search, model, images, dirs, device, batch_size, path):
    """One engine run under torch.profiler: where the time goes (ops by self time, host and device)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    oracle = PlaintextOracle(model, images, device=device, batch_size=batch_size)
    with profile(activities=activities) as prof:
        search.run(oracle, dirs)
        sync(device)
    events = prof.key_averages()
    tables = [events.table(sort_by="self_cpu_time_total", row_limit=30)]
    if torch.device(device).type == "cuda":
        tables.append(events.table(sort_by="self_cuda_time_total", row_limit=30))
    path.write_text("\n\n".join(tables))


def make_batches(images, dirs, batch_size, count, seed):
    """``count`` batches of perturbed inputs x + ε·N (ε in [0, 30]): what the oracle evaluates."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        rows = torch.randint(len(images), (batch_size,), generator=gen)
        di = torch.randint(len(dirs), (batch_size,), generator=gen)
        eps = torch.rand(batch_size, 1, 1, 1, generator=gen) * 30
        out.append((images[rows] + eps * dirs[di]).contiguous(memory_format=torch.channels_last))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: freshly initialised lenet5, seed 0)")
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rows", type=int, default=None, help="engine rows (default: 200 on CPU, 10000 on CUDA)")
    ap.add_argument("--job-rows", type=int, default=None, help="fingerprint-job rows (default: 2000 on CPU, the test split on CUDA)")
    ap.add_argument("--directions", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 512 on CPU, 65536 on CUDA")
    ap.add_argument("--eps-max", type=float, default=60.0)
    ap.add_argument("--bisection-levels", type=int, default=12, help="L: tol = eps_max / 2^L")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--profile", default=None, metavar="PATH",
                    help="also profile one engine run (torch.profiler, CPU and CUDA) and write the op table to PATH")
    ap.add_argument("--no-tf32", action="store_true",
                    help="full-precision float32 convolutions and matrix products on CUDA (PyTorch lets cuDNN "
                         "convolutions use TF32 by default); raw forward and engine alike: HESIG_GPU_EXACT=1")
    args = ap.parse_args()
    if args.no_tf32:  # hesig's own switch, so the benchmark measures what a user's run does
        os.environ[GPU_EXACT_ENV] = "1"
        apply_gpu_precision()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    args.rows = args.rows or (10000 if gpu else 200)
    args.batch_size = args.batch_size or (65536 if gpu else 512)
    device = torch.device(args.device)

    torch.manual_seed(args.seed)
    test = load_dataset(args.dataset, "test", args.data_root)
    if args.model:
        loaded = load_model(args.model)
        model, arch, model_hash = loaded.model, loaded.arch, loaded.hash
    else:
        model, arch, model_hash = build_model(args.arch, test.shape, test.num_classes), args.arch, "untrained"
    images = test.images[: args.rows]
    job_images = test.images[: args.job_rows or (len(test.images) if gpu else 2000)]
    dirs = make_directions("random", args.directions, test.shape, seed=args.seed).vectors

    # The oracle evaluates the exact fast copy, so that is the fair "raw" ceiling; the original
    # module's throughput is reported too, to show what the rewrite buys. Raw and engine runs are
    # interleaved three times and the medians compared, because these machines are noisy.
    batches = [b.to(device) for b in make_batches(images, dirs, args.batch_size, 16 if not gpu else 8, args.seed)]
    fast = fast_inference_copy(model).to(device)
    unoptimised = copy.deepcopy(model).eval().to(device, memory_format=torch.channels_last)
    search = BoundarySearch(args.eps_max, coarse_points=8, rtol=1e-2)
    raws, raws_unopt, engines = [], [], []
    for _ in range(args.repeats):
        raws.append(raw_forward_qps(fast, batches, args.seconds))
        raws_unopt.append(raw_forward_qps(unoptimised, batches, args.seconds / 2))
        oracle = PlaintextOracle(model, images, device=device, batch_size=args.batch_size)
        t0 = time.perf_counter()
        res = search.run(oracle, dirs)
        engine_seconds = time.perf_counter() - t0
        engines.append(res.total_queries / engine_seconds)
    raw, raw_unoptimised, engine = (statistics.median(v) for v in (raws, raws_unopt, engines))
    if args.profile:
        write_profile(search, model, images, dirs, device, args.batch_size, Path(args.profile))
    agreement = None
    if gpu:
        # The device path must find the same boundaries as the CPU path (up to float rounding).
        sub = images[:200]
        on_gpu = search.run(PlaintextOracle(model, sub, device=device, batch_size=args.batch_size), dirs)
        on_cpu = search.run(PlaintextOracle(model, sub, device="cpu", batch_size=512), dirs)
        agreement = {"rows": len(sub), "identical_eps": float((on_gpu.eps == on_cpu.eps).float().mean()),
                     "identical_censoring": float((on_gpu.censored == on_cpu.censored).float().mean()),
                     "identical_queries": float((on_gpu.queries == on_cpu.queries).float().mean())}
    chunk = CHUNK_SIZE["plaintext-cuda" if gpu else "plaintext"]
    job, job_seconds = job_qps(model, job_images, dirs, search, device, args.batch_size, chunk)

    # Bisection cost against the information-theoretic log2(eps_max / tol).
    levels = args.bisection_levels
    tol = args.eps_max / 2 ** levels
    bisection = []
    sub = images[: max(10, args.rows // 10)]
    for g in (1, 2, 8):
        r = BoundarySearch(args.eps_max, coarse_points=g, atol=tol, rtol=0.0, points_per_round=1).run(
            PlaintextOracle(model, sub, device=device, batch_size=args.batch_size), dirs)
        q = r.queries[~r.censored].double()
        bisection.append({"coarse_points": g, "queries_per_pair_mean": float(q.mean()) if q.numel() else None,
                          "log2_eps_max_over_tol": levels,
                          "ratio": float(q.mean()) / levels if q.numel() else None,
                          "censored_fraction": float(r.censored.float().mean())})

    print(json.dumps({
        "benchmark": "search", "model": arch, "model_hash": model_hash, "dataset": test.name,
        "rows": len(images), "directions": args.directions, "batch_size": args.batch_size,
        "device": args.device, "gpu": torch.cuda.get_device_name(device) if gpu else None,
        "cuda": torch.version.cuda if gpu else None,
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if gpu else None,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "raw_forward_qps": round(raw), "raw_forward_qps_unoptimised_module": round(raw_unoptimised), "engine_qps": round(engine), "engine_to_raw": round(engine / raw, 3),
        "samples": {"raw_forward_qps": [round(v) for v in raws], "engine_qps": [round(v) for v in engines]},
        "engine_target": 0.8, "engine_seconds": round(engine_seconds, 2), "engine_queries": res.total_queries,
        "engine_rounds": res.rounds,
        "job_rows": len(job_images), "job_chunk_size": chunk, "job_qps": round(job), "job_to_raw": round(job / raw, 3),
        "job_seconds": round(job_seconds, 2), "gpu_vs_cpu_agreement": agreement, "queries_per_pair_mean_default": float(res.queries.double().mean()),
        "censored_fraction_default": float(res.censored.float().mean()),
        "bisection": bisection, "bisection_target": 1.1,
    }, indent=2))


if __name__ == "__main__":
    main()
