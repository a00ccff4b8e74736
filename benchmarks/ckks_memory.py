"""Peak resident memory of a CKKS fingerprint job against its chunk size.

Trains a 1-epoch hecnn on MNIST (the model's accuracy does not matter for memory), draws 100
random directions, then fingerprints the first ``--images`` test images through the CKKS oracle
(batched layout, N = 8192) once per chunk size, each in its own ``/usr/bin/time -v`` process,
and prints JSON: the maximum resident set size per chunk size. The CKKS oracle works on one
image at a time (``rows_at_once = 1``) and the search releases each image's server session when
it is done, so the peak should not grow with the chunk size.

    HESIG_DATA=../shared/data python benchmarks/ckks_memory.py --out benchmarks/ckks_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HESIG = [str(Path(sys.executable).with_name("hesig"))]  # the installed console script


def peak_rss(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one command run under /usr/bin/time -v."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kb / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--chunk-sizes", default="1,4")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*HESIG, "train-model", "--dataset", "mnist", "--arch", "hecnn", "--epochs", "1",
                        "--out", str(tmp / "model"), "--quiet"], check=True, capture_output=True)
        subprocess.run([*HESIG, "directions", "--dataset", "mnist", "--count", "100",
                        "--out", str(tmp / "dirs.safetensors")], check=True, capture_output=True)
        rows = {}
        for size in (int(s) for s in args.chunk_sizes.split(",")):
            mb, seconds = peak_rss([*HESIG, "fingerprint", "--oracle", "ckks", "--model", str(tmp / "model"),
                                    "--directions", str(tmp / "dirs.safetensors"), "--dataset", "mnist",
                                    "--indices", f"0:{args.images}", "--chunk-size", str(size), "--quiet",
                                    "--client-policy", "strict",
                                    "--out", str(tmp / f"fp_{size}.safetensors")])
            rows[str(size)] = {"peak_rss_mb": round(mb, 1), "wall_seconds": round(seconds, 1)}
    result = {"what": "peak RSS of `hesig fingerprint --oracle ckks` (batched, N 8192, 100 directions, rtol 1e-2)",
              "images": args.images, "by_chunk_size": rows, "target_mb": 1536,
              "load_average_at_end": os.getloadavg(), "cpu_count": os.cpu_count()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
