"""Peak resident memory of an in-process CKKS fingerprint, stage by stage; prints one JSON object.

The same work as ``benchmarks/ckks.py``'s *after* path (seeded encryption, batched layout, N 8192,
100 directions, rtol 1e-3, ``strict`` client) on the first ``--images`` MNIST test images. Before
and after every stage -- the client's encryption, the server's session setup, each evaluation --
the kernel's high-water mark of this process is read (VmHWM) and reset (``/proc/self/clear_refs``,
5), so each stage's peak is its own; ``between`` is the peak of everything else (search
bookkeeping, decryption, the plaintext reference). ``baseline_rss_mb`` is the process before any
CKKS work: Python, torch, the model, the directions and the MNIST test split. Linux only.

    python benchmarks/ckks_memory_stages.py --model runs/mnist-hecnn/model \\
        --directions runs/mnist-hecnn/directions.safetensors --out benchmarks/ckks_memory_stages.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from hesig.core.io import atomic_write_text
from hesig.data import load_dataset
from hesig.models import load_model
from hesig.oracles.ckks import CKKSClient, CKKSServer
from hesig.oracles.ckks.oracle import CKKSOracle
from hesig.oracles.ckks.params import CKKSParameters
from hesig.signature.directions import Directions
from hesig.signature.search import BoundarySearch


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"error: no {field} in /proc/self/status (this benchmark needs Linux)")


class StagePeaks:
    """Per-stage peak RSS (MB): each stage's own high-water mark, the rest under ``between``."""

    def __init__(self):
        self.peaks: dict[str, list[float]] = {}
        self._reset()

    def _reset(self):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def record(self, name: str):
        self.peaks.setdefault(name, []).append(round(status_mb("VmHWM"), 1))
        self._reset()

    def wrap(self, cls, method: str, name: str):
        original = getattr(cls, method)

        def timed(*args, **kwargs):
            self.record("between")
            try:
                return original(*args, **kwargs)
            finally:
                self.record(name)
        setattr(cls, method, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--directions", required=True)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = load_model(args.model)
    dirs = Directions.load(args.directions)
    data = load_dataset("mnist", "test", args.data_root)
    baseline = status_mb("VmRSS")
    stages = StagePeaks()
    stages.wrap(CKKSClient, "encrypt", "client_encrypt")
    stages.wrap(CKKSServer, "open_session", "server_setup")
    stages.wrap(CKKSServer, "evaluate", "server_evaluate")
    params = CKKSParameters()
    search = BoundarySearch(60.0, coarse_points=(params.slots - 1) // dirs.count, points_per_round="auto",
                            rtol=args.rtol)  # benchmarks/ckks.py's search
    for i in range(args.images):
        oracle = CKKSOracle(target.model, data.images[i:i + 1], in_shape=target.in_shape, arch=target.arch,
                            params=params, layout="batched", encryption="seeded", client_policy="strict")
        search.run(oracle, dirs.vectors)
        del oracle
    stages.record("between")
    peaks = {name: max(values) for name, values in stages.peaks.items()}
    result = {"benchmark": "ckks_memory_stages", "model_hash": target.hash, "directions_hash": dirs.hash,
              "images": args.images, "rtol": args.rtol, "layout": "batched", "encryption": "seeded",
              "baseline_rss_mb": round(baseline, 1), "peak_rss_mb_by_stage": peaks,
              "peak_rss_mb": max(peaks.values()), "stage_calls": {k: len(v) for k, v in stages.peaks.items()},
              "target_mb": 1500, "python": sys.version.split()[0], "torch": torch.__version__,
              "machine": platform.machine()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
