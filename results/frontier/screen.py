"""Screening of issue 24's levers at reduced scale, before a full-scale frontier cell is spent on them.

    python results/frontier/screen.py CONFIG [CONFIG ...]   (HESIG_DATA set; models of results/reproduce.sh)

hecnn MNIST (runs/mnist-hecnn/model, evaluator runs/mnist-hecnn/evaluator), random directions
(seed 0), decoders (ngf 32, 10 epochs, patience 4, seed 0) trained on the fingerprints of the first
N_TRAIN = 20,000 training images and scored on the first N_TEST = 2,000 test images: a fifth of the
frontier's scale, so the absolute SSIM is lower than a full-scale cell's; only differences between
configurations at this one scale are read off. A CONFIG is SEARCH/FEATURES/LOSS:

* SEARCH: ``g<G>r<rtol>-k<K>`` (the plain search, K directions) or ``prior<M>-k<K>`` (the
  prior-guided search, M queries per pair; its prior: training images 20,000-21,999, which no
  decoder trains on, at the paper's 8:0.01);
* FEATURES: ``log`` or ``rank``, the decoder's encoding of ε (hesig.signature.decoders.features:
  standardised log ε, or its mid-rank among the direction's training fingerprints, which for the
  prior-guided search is the quantile level the search ended in); the censored mask beside it;
* LOSS: ``mse`` or ``ssim-l1`` (hesig train-decoder --loss);
* optionally ``/mlp<N>``: N fully connected hidden layers before the decoder's projection
  (hesig train-decoder --mlp; without it, the paper's generator);
* optionally ``/res<N>``: N residual blocks at full resolution before the decoder's output
  convolution (hesig train-decoder --res);
* optionally ``/ens<N>``: an ensemble, N decoders of seeds 0 .. N-1 on the same fingerprints, their
  reconstructions averaged pixel by pixel; each member's scores are recorded beside the
  ensemble's (so the seed-to-seed spread of one decoder is read off too).

Writes results/frontier/screen.json (one entry per CONFIG, merged with the entries already there):
queries per fingerprint (counted from the search), interior SSIM, full-map SSIM, PSNR, class
recovery, the decoder's best epoch and seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from hesig.core.io import atomic_write_json
from hesig.core.runtime import describe_device
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.models import load_model
from hesig.oracles.plaintext import PlaintextOracle
from hesig.signature.decoders import FingerprintFeatures, train_decoder
from hesig.signature.directions.base import make_directions
from hesig.signature.fingerprints import Fingerprints
from hesig.signature.prior_search import PriorGuidedSearch
from hesig.signature.search import BoundarySearch

HERE = Path(__file__).resolve().parent
N_TRAIN, N_TEST, N_PRIOR, EPOCHS, EPS_MAX = 20000, 2000, 2000, 10, 60.0


def search_for(spec: str, model, prior_images: torch.Tensor, directions: torch.Tensor):
    if spec.startswith("prior"):
        r = BoundarySearch(EPS_MAX, coarse_points=8, rtol=0.01).run(PlaintextOracle(model, prior_images, batch_size=4096),
                                                                    directions)
        prior = Fingerprints(r.eps, r.censored, r.queries, torch.arange(len(prior_images)),
                             {"split": "train", "search": {"eps_max": EPS_MAX}})
        return PriorGuidedSearch.from_prior(prior, int(spec[len("prior"):]))
    g, rtol = spec[1:].split("r")
    return BoundarySearch(EPS_MAX, coarse_points=int(g), rtol=float(rtol))


def features(kind: str, eps: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
    """The decoder inputs [n, 2k], encoding fitted on the first N_TRAIN rows (hesig's FingerprintFeatures)."""
    return FingerprintFeatures.fit(eps[:N_TRAIN], censored[:N_TRAIN], EPS_MAX, kind=kind).transform(eps, censored)


def main(configs: list[str]) -> None:
    model = load_model("runs/mnist-hecnn/model")
    evaluator = load_model("runs/mnist-hecnn/evaluator")
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    victims = torch.cat([train.images[:N_TRAIN], test.images[:N_TEST]])
    path = HERE / "screen.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    fingerprints = {}
    for config in configs:
        search_spec, kind, loss, *rest = config.split("/")
        mlp = next((int(r[len("mlp"):]) for r in rest if r.startswith("mlp")), 0)
        blocks = next((int(r[len("res"):]) for r in rest if r.startswith("res")), 0)
        members = next((int(r[len("ens"):]) for r in rest if r.startswith("ens")), 1)
        spec, k = search_spec.rsplit("-k", 1)
        directions = make_directions("random", int(k), (1, 28, 28), seed=0)
        if search_spec not in fingerprints:
            search = search_for(spec, model.model, train.images[N_TRAIN:N_TRAIN + N_PRIOR], directions.vectors)
            fingerprints[search_spec] = search.run(PlaintextOracle(model.model, victims, batch_size=4096), directions.vectors)
        found = fingerprints[search_spec]
        x = features(kind, found.eps, found.censored)
        t0 = time.time()
        recons, scores = [], []
        for seed in range(members):
            net, rep = train_decoder(x[:N_TRAIN], victims[:N_TRAIN], ngf=32, epochs=EPOCHS, patience=4, seed=seed,
                                     progress=False, loss=loss, mlp=mlp, res=blocks)
            with torch.no_grad():
                recons.append(torch.cat([net(x[N_TRAIN + s:N_TRAIN + s + 1000]) for s in range(0, N_TEST, 1000)]))
            if members > 1:
                one = reconstruction_report(recons[-1], victims[N_TRAIN:], test.labels[:N_TEST], train.images[:N_TRAIN],
                                            train.labels[:N_TRAIN], evaluator.model)["attack"]
                scores.append({"seed": seed, "ssim": one["ssim_mean"], "ssim_full_map": one["ssim_full_map_mean"],
                               "psnr": one["psnr_mean"], "class_recovery": one["class_recovery"],
                               "best_epoch": rep.best_epoch})
        recon = torch.stack(recons).mean(0)
        report = reconstruction_report(recon, victims[N_TRAIN:], test.labels[:N_TEST], train.images[:N_TRAIN],
                                       train.labels[:N_TRAIN], evaluator.model)
        a = report["attack"]
        results[config] = {
            "queries_per_fingerprint": float(found.queries[N_TRAIN:].sum(1).double().mean()),
            "ssim": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"], "psnr": a["psnr_mean"],
            "class_recovery": a["class_recovery"], "best_epoch": rep.best_epoch, "decoder_seconds": round(time.time() - t0),
            "n_train": N_TRAIN, "n_test": N_TEST, "epochs": EPOCHS, "mlp": mlp,
            **({"res": blocks} if blocks else {}),
            **({"ensemble": members, "members": scores} if members > 1 else {}),
            "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
            "hashes": {"model": model.hash, "evaluator": evaluator.hash, "directions": directions.hash},
            "ran_on": describe_device("cpu"), "torch_threads": torch.get_num_threads()}
        print(config, json.dumps(results[config]), flush=True)
        atomic_write_json(path, dict(sorted(results.items())))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    main(sys.argv[1:])
