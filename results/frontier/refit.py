"""A decoder lever on a finished frontier cell's own fingerprints (issue 24).

    [DEVICE=cpu] python results/frontier/refit.py CELL_FOLDER NAME [hesig train-decoder options ...]
    e.g. python results/frontier/refit.py runs/frontier/learned-mnist-hecnn-k400-e2 res2 --res 2

The cell's study (results/frontier/run.sh) fingerprinted all training and test images once; this
trains another decoder on the same training fingerprints through the CLI (``hesig train-decoder``
with the frontier's settings, ngf 32, 20 epochs, patience 4, seed 0, plus the given options),
decodes the same test fingerprints (``hesig reconstruct``, class recovery by the cell's evaluator)
and records the result beside the cell's own in results/frontier/refit.json under
``<cell folder name>/<NAME>``: the queries are the cell's, so only the decoder differs. Work
folders: runs/frontier/refit/<cell>-<NAME>/{decoder,reconstruction}; a finished decoder is not
trained again (rerun to resume after a kill).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from hesig.core.errors import HesigError
from hesig.core.io import atomic_write_json
from hesig.core.runtime import describe_device
from hesig.jobs.study import collect_cells
from hesig.signature.fingerprints import Fingerprints

HERE = Path(__file__).resolve().parent
#: The frontier's decoder (run.sh: --decoder-ngf 32 --decoder-epochs 20; the study's patience 4, seed 0).
FRONTIER_DECODER = ["--ngf", "32", "--epochs", "20", "--patience", "4", "--seed", "0"]


def hesig(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "hesig", *args], check=True)


def one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise HesigError(f"{folder}: expected one {pattern}, found {len(found)} (is it a finished single-cell study?)")
    return found[0]


def main(cell_dir: Path, name: str, options: list[str]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise HesigError(f"NAME must be a short folder name (letters, digits, '.', '_', '-'), got {name!r}")
    if not cell_dir.is_dir():
        raise HesigError(f"{cell_dir} is not a folder")
    cells = collect_cells(cell_dir)
    if len(cells) != 1:
        raise HesigError(f"{cell_dir}: expected one finished cell, found {len(cells)}")
    cell = cells[0]
    fp_train, fp_test = one(cell_dir, "*/fp_train_*.safetensors"), one(cell_dir, "*/fp_test_*.safetensors")
    work = cell_dir.parent / "refit" / f"{cell_dir.name}-{name}"
    decoder, recon = work / "decoder", work / "reconstruction"
    device = os.environ.get("DEVICE", "cpu")
    t0 = time.perf_counter()
    if not (decoder / "decoder.json").exists():
        hesig("train-decoder", "--fingerprints", str(fp_train), "--out", str(decoder), *FRONTIER_DECODER, *options,
              "--device", device, "--quiet")
    hesig("reconstruct", "--decoder", str(decoder), "--fingerprints", str(fp_test), "--out", str(recon),
          "--classifier", str(cell_dir / "evaluator"), "--force")
    metrics = json.loads((recon / "metrics.json").read_text())
    trained = json.loads((decoder / "decoder.json").read_text())
    attack = metrics["metrics"]["attack"]
    test = Fingerprints.load(fp_test)
    if trained["model_hash"] != cell["hashes"]["model"] or test.meta["model_hash"] != cell["hashes"]["model"]:
        raise HesigError(f"{cell_dir}: its fingerprints and decoder are of another model than its cell")
    entry = {
        "cell": cell_dir.name, "options": options, "decoder_job": trained["job"],
        "queries_per_fingerprint": float(test.queries.sum(1).double().mean()),  # counted from the file
        "n_train": trained["n_train"], "n_test": len(test),
        "ssim": attack["ssim_mean"], "ssim_full_map": attack["ssim_full_map_mean"], "psnr": attack["psnr_mean"],
        "class_recovery": attack["class_recovery"], "ssim_std": attack["ssim_std"],
        "epochs_run": trained["epochs_run"], "best_epoch": trained["best_epoch"],
        "train_seconds": trained["train_seconds"], "seconds": round(time.perf_counter() - t0),
        "cell_decoder": {k: cell[k] for k in ("ssim", "ssim_full_map", "psnr", "class_recovery")}
        | {"epochs_run": cell["decoder"]["epochs_run"], "best_epoch": cell["decoder"]["best_epoch"]},
        "hashes": {"model": cell["hashes"]["model"], "evaluator": cell["hashes"]["evaluator"],
                   "directions": cell["hashes"]["directions"]},
        "ran_on": describe_device(device), "torch_threads": torch.get_num_threads(),
    }
    path = HERE / "refit.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[f"{cell_dir.name}/{name}"] = entry
    atomic_write_json(path, dict(sorted(results.items())))
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    try:
        main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
    except HesigError as exc:
        raise SystemExit(f"error: {exc}") from None
    except subprocess.CalledProcessError as exc:  # hesig has printed its one line
        raise SystemExit(exc.returncode) from None
