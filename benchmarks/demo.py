"""The digits demo's wall time, measured; prints one JSON object (and writes it with --out).

Runs ``hesig demo --quiet`` on the bundled digits in a fresh temporary folder (nothing reused),
once, with the thread count the user would get (torch's default unless ``--threads``), and records
the wall seconds, each step's seconds, the printed metrics and the machine (CPU model and count,
platform, Python, torch, load average before and after: the README quotes this file, so a number
measured on a busy machine says so).

Usage::

    python benchmarks/demo.py --out benchmarks/demo.json [--threads 2] [--keep DIR]
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
import time
from datetime import datetime, timezone
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. benchmarks/demo.json)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the demo (default: unset)")
    ap.add_argument("--keep", default=None, help="copy the demo folder here afterwards (e.g. for docs/report.png)")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "from hesig.cli import main; main()", "demo", "--out", str(run),
                               "--quiet"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        if proc.returncode:
            sys.exit(f"demo failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        summary = json.loads((run / "summary.json").read_text())
        if args.keep:
            shutil.copytree(run, args.keep, dirs_exist_ok=True)
    m = summary["metrics"]["metrics"]
    result = {
        "command": "hesig demo --quiet  (bundled digits, defaults, fresh folder)",
        "wall_seconds": round(wall, 1),
        "steps_seconds": {name: rec.get("step_seconds") for name, rec in summary["steps"].items()
                          if isinstance(rec, dict) and "step_seconds" in rec},
        "metrics": {"psnr_db": round(m["attack"]["psnr_mean"], 2), "ssim": round(m["attack"]["ssim_mean"], 3),
                    "class_recovery_percent": round(100 * m["attack"]["class_recovery"], 1),
                    "queries_per_image": round(summary["metrics"]["fingerprints"]["queries_per_fingerprint_mean"])},
        "printout": proc.stdout.strip().splitlines(),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "omp_num_threads": env.get("OMP_NUM_THREADS"), "torch_threads_default": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in load_after]},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
