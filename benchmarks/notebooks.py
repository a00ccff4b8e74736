"""Notebook run times; prints one JSON object.

Executes every notebook in ``notebooks/`` top to bottom from a fresh kernel with its small settings
(``PAPER_SCALE = False``), each in its own empty temporary working directory so nothing is reused,
and reports wall seconds per notebook against the 3-minute target. Needs ``HESIG_DATA`` (MNIST).

Usage::

    python benchmarks/notebooks.py [NAME ...]     # e.g. 01_encrypted_query_leakage
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 180


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebook stems (default: all)")
    args = ap.parse_args()
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
    os.environ.setdefault("MPLBACKEND", "Agg")
    results = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as work:
            t0 = time.perf_counter()
            NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
            seconds = time.perf_counter() - t0
        results[path.stem] = {"seconds": round(seconds, 1), "within_target": seconds <= TARGET_SECONDS}
        print(f"{path.stem}: {seconds:.0f} s", file=sys.stderr)
    print(json.dumps({"notebooks": results, "target_seconds": TARGET_SECONDS,
                      "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                  "python": platform.python_version(), "torch": torch.__version__}}, indent=2))


if __name__ == "__main__":
    main()
