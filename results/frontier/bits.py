"""How much a one-query-per-point fingerprint tells beyond the target's label (why adaptive.py exists).

    python results/frontier/bits.py STUDY_CELL_FOLDER   (HESIG_DATA set)
    e.g. python results/frontier/bits.py runs/frontier/learned-mnist-hecnn-k400-e2/learned-k400

Reads the folder's training fingerprints (``fp_train_*.safetensors``: one query per point, so each
pair is one bit, flipped or not) and the study's target model (``../model``), labels the owner's
training images with the target, and reports, over those images:

* the marginal entropy of the bits: Σ_points H(flip rate), in bits;
* their entropy within the target's label: Σ_points Σ_c P(c)·H(flip rate within c);
* per label, the share of points that are nearly constant (flip rate < 5 % or > 95 %).

A point that always flips for every "1" tells nothing about which "1" it is. Writes
results/frontier/bits.json (one entry per folder name, with the fingerprint file's hash).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hesig.core.errors import HesigError
from hesig.core.io import atomic_write_json, tensor_hash
from hesig.data import load_dataset
from hesig.models import load_model
from hesig.signature.fingerprints import Fingerprints

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive import entropy_within_routes  # noqa: E402  (one definition of the bits' entropy)

HERE = Path(__file__).resolve().parent
NEAR_CONSTANT = 0.05


def main(folder: Path) -> None:
    files = sorted(folder.glob("fp_train_*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"bits.py: expected one fp_train_*.safetensors in {folder}, found {len(files)}")
    fp = Fingerprints.load(files[0])
    if int(fp.queries.max()) != 1 or int(fp.queries.min()) != 1:
        raise SystemExit(f"bits.py: {files[0]} is not one query per pair (its bits would not be single answers)")
    target = load_model(folder.parent / "model")
    if target.hash != fp.meta.get("model_hash"):
        raise SystemExit(f"bits.py: {files[0]} was made with model {fp.meta.get('model_hash')}, not {target.hash}")
    train = load_dataset(fp.meta["dataset"], "train")
    images = train.images[fp.indices]
    with torch.no_grad():
        labels = torch.cat([target.model.eval()(images[s:s + 4096]).argmax(1) for s in range(0, len(images), 4096)])
    bits = ~fp.censored
    marginal = entropy_within_routes(bits, torch.zeros_like(labels))  # one route: the marginal entropy
    constant = {}
    for c in labels.unique().tolist():
        rate = bits[labels == c].double().mean(0)
        constant[str(c)] = float(((rate < NEAR_CONSTANT) | (rate > 1 - NEAR_CONSTANT)).double().mean())
    entry = {"points": bits.shape[1], "images": bits.shape[0], "entropy_bits_marginal": marginal,
             "entropy_bits_within_target_label": entropy_within_routes(bits, labels),
             "near_constant_share_by_label": constant, "near_constant_threshold": NEAR_CONSTANT,
             "hashes": {"model": target.hash, "fingerprints": tensor_hash(fp.eps, fp.censored),
                        "directions": fp.meta.get("directions_hash")}}
    path = HERE / "bits.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[f"{folder.parent.name}/{folder.name}"] = entry
    atomic_write_json(path, dict(sorted(results.items())))
    print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    try:
        main(Path(sys.argv[1]))
    except HesigError as exc:  # an unreadable fingerprint file or model: one line
        raise SystemExit(f"bits.py: {exc}") from None
