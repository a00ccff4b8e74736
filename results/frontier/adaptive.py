"""Per-input adaptive query points (issue 24's lever "per-input adaptive choice of the next
direction"): the first answers choose which points to ask next.

    [STAGE2=reknot|shared|learned] python results/frontier/adaptive.py K_A K_B [EPOCHS [BALANCE [EPOCHS_B]]]
    (HESIG_DATA set; hecnn of results/reproduce.sh)
    N_TRAIN=60000 N_TEST=10000 DECODER_EPOCHS=20 python results/frontier/adaptive.py ...   (the frontier's scale)

Why. The 400 learned points of the full-scale frontier cell (``PARTS=learned``) are one set for
every input. Their bits carry 324 bits of marginal entropy over the owner's 60,000 training
fingerprints, but only 222 within the target's label: 36-43 % of the points are almost constant
(flip rate under 5 % or over 95 %) within each label (results/frontier/bits.py). A point that
always flips for every "1" tells the attacker nothing about which "1" it is looking at.

What. Two stages, each the ``learned`` direction family (:mod:`hesig.signature.directions.learned`,
equations there; one query per point at its own ε, through the real plaintext oracle):

1. K_A points shared by every input, learned on the owner's first N_TRAIN training images.
2. A *router*, an MLP (K_A → 256 → 10) the owner trains on its own images' stage-1 bits to
   predict its model's label (the owner holds the model; the victim's label is never seen). Each
   input's route r(x) = argmax router(bits_1(x)) is computed by the attacker from the answers it
   already has.
3. Ten sets of K_B points, one per route; an input routed to c is asked set c's points: the choice
   of the next K_B queries depends on that input's answers. STAGE2 says how the sets are made:

   * ``reknot`` (default): one set of K_B directions learned like stage 1 on all the owner images
     (seed 1), then asked in route c at the median ε of the owner images routed to c (the
     prior-guided search's M = 1 knot over up to REKNOT_ROWS of them, owner queries): the same
     directions, but each bit a fair coin *within* the route;
   * ``shared``: the control, not adaptive: the reknot run's shared set asked at its own learned ε
     in every route (same points, same decoder and input layout; only the within-route knots differ);
   * ``learned``: set c learned from scratch (seed 1 + c) on the owner images routed to c,
     EPOCHS_B epochs (default EPOCHS). Each set sees a tenth of the images, so a tenth of stage
     1's steps, and a fresh joint decoder: at the screening's scale (2 epochs, about 2,000 images
     a route) the points end with bits that are almost constant within the route (48 of the 300
     bits' within-route entropy; ``reknot``: 279).

Every input costs exactly K_A + K_B queries (counted from the searches' per-pair counts). The
decoder (the screening's: ngf 32, DECODER_EPOCHS epochs (default 10; the frontier's cells train 20),
patience 4, seed 0) reads the stage-1 features
(hesig's ``log`` FingerprintFeatures, as results/frontier/learned.py feeds its decoder), the
stage-2 bits as ±1 in the route's block of a [10·K_B] vector (zeros elsewhere, so each route has
its own input weights) and the route as one-hot. Scale as results/frontier/learned.py
(N_TRAIN / N_TEST, default 20,000 / 2,000, the owner's images = the first N_TRAIN, victims
the first N_TEST test images; LEARNED_DEVICE where the points, router inputs and decoder are computed), so rows stand beside learned.json's ``k400-e2-b0.1``.

Besides the paper's metrics the entry records: the route's agreement with the target's label and
with the true label on the victims; the bits' entropy within a route (the sum over points of the
binary entropy of each point's flip rate within the route, weighted by the route's share of the
owner images) for stage 1 and 2; and class recovery split by whether the target model itself
labels the victim right (every bit is a function of the target's decisions, so where it errs the
answers describe its wrong view).

Writes results/frontier/adaptive.json (one entry per K_A, K_B, EPOCHS and BALANCE; key suffixed
``-reknot`` / ``-shared`` for those STAGE2,
``-n<N_TRAIN>`` off the default scale and ``-d<DECODER_EPOCHS>`` off 10), with the hashes of every set.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hesig.core.errors import HesigError
from hesig.core.io import atomic_write_json, tensor_hash
from hesig.core.runtime import describe_device
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.models import load_model
from hesig.models.training import train_epochs
from hesig.oracles.plaintext import PlaintextOracle
from hesig.signature.decoders import FingerprintFeatures, train_decoder
from hesig.signature.directions import make_directions
from hesig.signature.directions.learned import initial_knots

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learned import scale  # noqa: E402  (N_TRAIN, N_TEST, LEARNED_DEVICE: one reading of the scale)

HERE = Path(__file__).resolve().parent
EPS_MAX, SEED, ROUTES, ROUTER_EPOCHS, REKNOT_ROWS = 60.0, 0, 10, 10, 1000
STAGE2_MODES = ("reknot", "shared", "learned")


def decoder_epochs() -> int:
    """DECODER_EPOCHS from the environment (default 10, the screening's), checked (one line if bad)."""
    value = os.environ.get("DECODER_EPOCHS", "10")
    if not value.isdigit() or not 1 <= int(value) <= 200:
        raise SystemExit(f"adaptive.py: DECODER_EPOCHS must be an integer in 1..200, got {value!r}")
    return int(value)


def ask(model: nn.Module, images: torch.Tensor, dirs, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The real oracle at the set's own points: (eps [n, K], censored [n, K], queries [n, K])."""
    res = dirs.point_search().run(PlaintextOracle(model, images, batch_size=4096, device=device), dirs.vectors)
    return res.eps, res.censored, res.queries


def train_router(bits: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """MLP from ±1 stage-1 bits [n, K_A] to the target's label [n] (the owner's images only)."""
    torch.manual_seed(SEED)
    router = nn.Sequential(nn.Linear(bits.shape[1], 256), nn.ReLU(), nn.Linear(256, ROUTES))
    opt = torch.optim.Adam(router.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _ in train_epochs([opt], lambda idx: F.cross_entropy(router(bits[idx]), labels[idx]), len(bits),
                          batch_size=256, epochs=ROUTER_EPOCHS, generator=gen, modules=[router]):
        pass
    return router.eval()


def entropy_within_routes(bits: torch.Tensor, routes: torch.Tensor) -> float:
    """Σ_points Σ_c P(c)·H(flip rate of the point within route c), in bits (bits: bool [n, K])."""
    total = 0.0
    for c in routes.unique():
        rows = bits[routes == c].double()
        p = rows.mean(0).clamp(1e-12, 1 - 1e-12)
        h = -(p * p.log2() + (1 - p) * (1 - p).log2())
        total += float(len(rows) / len(bits) * h.sum())
    return total


def main(k_a: int, k_b: int, epochs: int, balance: float, epochs_b: int) -> None:
    n_train, n_test, device = scale()
    d_epochs = decoder_epochs()
    stage2 = os.environ.get("STAGE2", "reknot")
    if stage2 not in STAGE2_MODES:
        raise SystemExit(f"adaptive.py: STAGE2 must be one of {', '.join(STAGE2_MODES)}, got {stage2!r}")
    target, evaluator = load_model("runs/mnist-hecnn/model"), load_model("runs/mnist-hecnn/evaluator")
    model = target.model.eval().to(device)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    owner = train.images[:n_train]
    victims = torch.cat([owner, test.images[:n_test]])
    with torch.no_grad():
        target_labels = torch.cat([model(victims[s:s + 4096].to(device)).argmax(1).cpu()
                                   for s in range(0, len(victims), 4096)])
    t0 = time.time()
    learn = dict(model=model, learn_balance=balance, eps_max=EPS_MAX)

    # Stage 1: K_A shared points (as learned.py: owner images = the first n_train, medians from the rows after).
    stage1 = make_directions("learned", k_a, train.shape, SEED, train_images=train.images, learn_images=n_train,
                             learn_epochs=epochs, **learn)
    eps1, cen1, q1 = ask(model, victims, stage1, device)
    bits1 = ~cen1
    router = train_router(bits1[:n_train].float() * 2 - 1, target_labels[:n_train])
    with torch.no_grad():
        routes = router(bits1.float() * 2 - 1).argmax(1)
    agree = float((routes[:n_train] == target_labels[:n_train]).float().mean())
    print(json.dumps({"stage1_seconds": round(time.time() - t0), "route_accuracy_owner": agree}), flush=True)

    # Stage 2: one set per route (STAGE2 says how it is made); each input asks its route's set.
    bits2 = torch.zeros(len(victims), k_b, dtype=torch.bool)
    q2 = torch.zeros(len(victims), k_b, dtype=torch.int32)
    sets = {}
    if stage2 in ("reknot", "shared"):
        shared = make_directions("learned", k_b, train.shape, SEED + 1, train_images=train.images, learn_images=n_train,
                                 learn_epochs=epochs, **learn)
    for c in range(ROUTES):
        mine = (routes[:n_train] == c).nonzero().squeeze(1)
        if len(mine) < 2:
            raise SystemExit(f"adaptive.py: route {c} holds {len(mine)} owner images; too few to learn its points")
        if stage2 == "reknot":
            knots = initial_knots(model, owner[mine[:REKNOT_ROWS]], shared.vectors, EPS_MAX)  # owner queries
            sets[c] = replace(shared, knots=knots.cpu().double()[:, None], params={**shared.params, "route": c})
        elif stage2 == "shared":
            sets[c] = shared
        else:
            sets[c] = make_directions("learned", k_b, train.shape, SEED + 1 + c, train_images=owner[mine],
                                      learn_epochs=epochs_b, **learn)
        rows = (routes == c).nonzero().squeeze(1)
        _, cen, q = ask(model, victims[rows], sets[c], device)
        bits2[rows], q2[rows] = ~cen, q
        print(json.dumps({"route": c, "owner_images": len(mine), "seconds": round(time.time() - t0)}), flush=True)
    learn_seconds = time.time() - t0

    # The decoder's inputs: stage-1 features, stage-2 ±1 bits in the route's block, the route one-hot.
    block = torch.zeros(len(victims), ROUTES, k_b)
    block[torch.arange(len(victims)), routes] = bits2.float() * 2 - 1
    feats1 = FingerprintFeatures.fit(eps1[:n_train], cen1[:n_train], EPS_MAX).transform(eps1, cen1)
    x = torch.cat([feats1, block.flatten(1), F.one_hot(routes, ROUTES).float()], dim=1)
    t1 = time.time()
    net, rep = train_decoder(x[:n_train], owner, ngf=32, epochs=d_epochs, patience=4, seed=SEED,
                             progress=False, device=device)
    net = net.cpu().eval()
    with torch.no_grad():
        recon = torch.cat([net(x[n_train + s:n_train + s + 1000]) for s in range(0, n_test, 1000)])
        recovered = torch.cat([evaluator.model(recon[s:s + 1000]).argmax(1) for s in range(0, n_test, 1000)])
    labels = test.labels[:n_test]
    report = reconstruction_report(recon, victims[n_train:], labels, owner, train.labels[:n_train], evaluator.model)
    a = report["attack"]
    queries = (q1.sum(1) + q2.sum(1))[n_train:].double()
    right = target_labels[n_train:] == labels
    entry = {"k_a": k_a, "k_b": k_b, "stage2": stage2, "learn_epochs": epochs,
             "learn_epochs_b": epochs_b if stage2 == "learned" else None, "balance": balance,
             "queries_per_fingerprint": float(queries.mean()), "queries_max": int(queries.max()),
             "ssim": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"], "psnr": a["psnr_mean"],
             "class_recovery": a["class_recovery"],
             "class_recovery_where_target_right": float((recovered == labels)[right].float().mean()),
             "class_recovery_where_target_wrong": float((recovered == labels)[~right].float().mean()),
             "target_wrong_victims": int((~right).sum()),
             "route_matches_target_label": float((routes[n_train:] == target_labels[n_train:]).float().mean()),
             "route_matches_true_label": float((routes[n_train:] == labels).float().mean()),
             "entropy_bits_stage1_within_route": entropy_within_routes(bits1[:n_train], routes[:n_train]),
             "entropy_bits_stage2_within_route": entropy_within_routes(bits2[:n_train], routes[:n_train]),
             "flip_rate_victims": float(torch.cat([bits1, bits2], 1)[n_train:].float().mean()),
             "best_epoch": rep.best_epoch, "epochs_run": rep.epochs_run,
             "learn_seconds": round(learn_seconds), "decoder_seconds": round(time.time() - t1),
             "n_train": n_train, "n_test": n_test, "decoder_epochs": d_epochs,
             "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
             "hashes": {"model": target.hash, "evaluator": evaluator.hash, "stage1": stage1.hash,
                        "stage2": tensor_hash(*(sets[c].vectors for c in range(ROUTES)), *(sets[c].knots for c in range(ROUTES))),
                        "stage2_bits": tensor_hash(bits2.to(torch.uint8)), "routes": tensor_hash(routes)},
             "ran_on": describe_device(device), "torch_threads": torch.get_num_threads()}
    path = HERE / "adaptive.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    key = f"a{k_a}-b{k_b}-e{epochs}" + (f"-eb{epochs_b}" if stage2 == "learned" and epochs_b != epochs else "")
    key += f"-bal{balance:g}" + (f"-{stage2}" if stage2 != "learned" else "")
    key += f"-n{n_train}" if (n_train, n_test) != (20000, 2000) else ""
    key += (f"-d{d_epochs}" if d_epochs != 10 else "") + (f"-{device.type}" if device.type != "cpu" else "")
    results[key] = entry
    atomic_write_json(path, dict(sorted(results.items())))
    print(json.dumps({key: entry}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not 2 <= len(args) <= 5 or not all(a.isdigit() and int(a) > 0 for a in args[:3] + args[4:]):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    try:
        balance = float(args[3]) if len(args) == 4 else 0.1
    except ValueError:
        raise SystemExit(f"adaptive.py: BALANCE must be a number, got {args[3]!r}") from None
    if not math.isfinite(balance) or balance < 0:
        raise SystemExit(f"adaptive.py: BALANCE must be finite and >= 0, got {balance}")
    epochs = int(args[2]) if len(args) >= 3 else 2
    try:
        main(int(args[0]), int(args[1]), epochs, balance, int(args[4]) if len(args) == 5 else epochs)
    except HesigError as exc:  # a missing model, a bad dataset folder: one line
        raise SystemExit(f"adaptive.py: {exc}") from None
