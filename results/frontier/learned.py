"""Learned directions: the model owner trains its K query points (direction and ε) on its own data.

    python results/frontier/learned.py K [EPOCHS [BALANCE]]   (HESIG_DATA set; hecnn of results/reproduce.sh)
    LEARNED_DEVICE=cuda N_TRAIN=60000 N_TEST=10000 python results/frontier/learned.py ...   (GPU; full scale)

results/frontier/ceiling.py found that 400 *learned* bits, read by the attack's own decoder, give
an interior SSIM far above what 400 queries of random directions give: the gap lies in how the
attack spends its bits, not in how many it has. A query's bit is
``b_i(x) = [argmax M(x + ε_i d_i) != argmax M(x)]``, and the model owner holds M (white box), so it
can choose (d_i, ε_i) by gradient descent on its own training images, jointly with a decoder:

    margin_i(x) = M(x + ε_i d_i)[y] - max_{j != y} M(x + ε_i d_i)[j],   y = argmax M(x)
    bit_i = hard + (soft - soft.detach()),  hard = sign(-margin_i),  soft = hardtanh(-margin_i / τ)

(straight-through: the forward pass is the exact oracle bit; τ is the median |margin| of the
first batch, so about half the pairs pass a gradient), d_i = v_i / ||v_i||, ε_i = exp(ℓ_i)
capped at ε_max, initialised at the median ε of random directions over 500 owner images (the
prior-guided search's M = 1 knot: each bit starts as a fair coin). The decoder during this
training is the attack's DCGAN generator on the ±1 bits, MSE loss, plus BALANCE (default 0) times
the mean over directions of (batch mean of the soft bit)^2, which pulls each bit towards a fair coin
(the learning rate of ε is a tenth of the directions' when BALANCE > 0).

Then the learned directions are used as any other: the victims' and the owner's training images
are fingerprinted through the real plaintext oracle with hesig's prior-guided search at M = 1
(knots ε_i: exactly one query per direction), and a fresh decoder is trained on those
fingerprints exactly as results/frontier/screen.py does (same scale: the first 20,000 training
images -- also the directions' training set, the owner's data -- and the first 2,000 test images;
ngf 32, 10 epochs; log features). Its rows stand beside screen.json's ``prior1-k400/log/mse``.

Writes results/frontier/learned.json (one entry per K, EPOCHS and BALANCE, with the hashes of the
learned directions and ε). The points themselves are not saved; a rerun with the same seed trains them again.
LEARNED_DEVICE (default cpu) is where the points, the fingerprints and the decoder are computed;
N_TRAIN / N_TEST (default 20,000 / 2,000) set the scale. Entries at other than the default scale
or device carry them in their key (``-n60000`` / ``-cuda``), so rows of one scale stay together.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hesig.core.io import atomic_write_json, tensor_hash
from hesig.core.runtime import describe_device
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.models import load_model
from hesig.models.dcgan import DCGANDecoder
from hesig.models.training import train_epochs
from hesig.oracles.plaintext import PlaintextOracle
from hesig.signature.decoders import FingerprintFeatures, train_decoder
from hesig.signature.fingerprints import Fingerprints
from hesig.signature.prior_search import PriorGuidedSearch
from hesig.signature.search import BoundarySearch

HERE = Path(__file__).resolve().parent
N_INIT, DECODER_EPOCHS, EPS_MAX, SEED, BATCH = 500, 10, 60.0, 0, 64
N_TRAIN, N_TEST = int(os.environ.get("N_TRAIN", 20000)), int(os.environ.get("N_TEST", 2000))
DEVICE = torch.device(os.environ.get("LEARNED_DEVICE", "cpu"))


class QueryPoints(nn.Module):
    """K query points: unit directions d [K, C, H, W] and distances ε [K] in (0, ε_max]."""

    def __init__(self, directions: torch.Tensor, eps: torch.Tensor):
        super().__init__()
        self.v = nn.Parameter(directions.clone())
        self.log_eps = nn.Parameter(eps.clamp(min=1e-3).log())

    def directions(self) -> torch.Tensor:
        return self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def eps(self) -> torch.Tensor:
        return self.log_eps.exp().clamp(max=EPS_MAX)


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, points: QueryPoints) -> torch.Tensor:
    """margin_i(x) [B, K]: the original label's logit minus the best other one at x + ε_i d_i."""
    b, k = x.shape[0], points.v.shape[0]
    queries = x[:, None] + points.eps().view(1, k, 1, 1, 1) * points.directions()[None]
    logits = model(queries.flatten(0, 1)).view(b, k, -1)
    own = logits.gather(2, y.view(b, 1, 1).expand(b, k, 1)).squeeze(2)
    other = logits.scatter(2, y.view(b, 1, 1).expand(b, k, 1), -math.inf).amax(2)
    return own - other


def learn(model: nn.Module, images: torch.Tensor, points: QueryPoints, epochs: int, balance: float = 0.0) -> dict:
    """Train the query points and a decoder on the owner's images [N, C, H, W]; returns a summary."""
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        labels = torch.cat([model(images[s:s + 4096]).argmax(1) for s in range(0, len(images), 4096)])
        tau = float(margins(model, images[:BATCH], labels[:BATCH], points).abs().median())
    k = points.v.shape[0]
    decoder = DCGANDecoder(k, tuple(images.shape[1:]), ngf=32).to(images.device)
    opt = torch.optim.Adam([{"params": decoder.parameters(), "lr": 2e-3},
                            {"params": [points.v], "lr": 1e-2},
                            {"params": [points.log_eps], "lr": 1e-3 if balance else 1e-2}], betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        flips = (margins(model, images[:512], labels[:512], points) < 0).float().mean(0)
    history = [{"epoch": 0, "flip_rate_mean": float(flips.mean()), "flip_rate_min": float(flips.min()),
                "flip_rate_max": float(flips.max())}]

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        m = margins(model, images[idx], labels[idx], points)
        soft = F.hardtanh(-m / tau)
        bits = torch.sign(-m).detach() + soft - soft.detach()   # forward: the oracle's bit (+1: flipped)
        loss = F.mse_loss(decoder(bits), images[idx])
        return loss + balance * soft.mean(0).pow(2).mean() if balance else loss

    for epoch in train_epochs([opt], loss_of_batch, len(images), batch_size=BATCH, epochs=epochs, generator=gen,
                              modules=[decoder], min_batch=2):
        with torch.no_grad():
            flips = (margins(model, images[:512], labels[:512], points) < 0).float().mean(0)
        history.append({"epoch": epoch.number, "train_mse": epoch.mean_loss,
                        "flip_rate_mean": float(flips.mean()), "flip_rate_min": float(flips.min()),
                        "flip_rate_max": float(flips.max())})
        print(json.dumps(history[-1]), flush=True)
    return {"tau": tau, "history": history}


def main(k: int, epochs: int, balance: float = 0.0) -> None:
    target, evaluator = load_model("runs/mnist-hecnn/model"), load_model("runs/mnist-hecnn/evaluator")
    model = target.model.eval().to(DEVICE)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    torch.manual_seed(SEED)
    start = torch.randn((k, *train.images.shape[1:]), generator=torch.Generator().manual_seed(SEED))
    start = start / start.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    # the initial medians: owner images no decoder trains on, except at full scale, where every
    # training image is the decoders' (then the last N_INIT: still only the owner's own data)
    owner = train.images[N_TRAIN:N_TRAIN + N_INIT] if N_TRAIN + N_INIT <= len(train.images) else train.images[-N_INIT:]
    r = BoundarySearch(EPS_MAX, coarse_points=8, rtol=0.01).run(PlaintextOracle(model, owner, batch_size=4096, device=DEVICE), start)
    init = PriorGuidedSearch.from_prior(Fingerprints(r.eps, r.censored, r.queries, torch.arange(N_INIT),
                                                     {"split": "train", "search": {"eps_max": EPS_MAX}}), 1).knots[:, 0]
    points = QueryPoints(start, init.float()).to(DEVICE)
    t0 = time.time()
    summary = learn(model, train.images[:N_TRAIN].to(DEVICE), points, epochs, balance)
    learn_seconds = round(time.time() - t0)
    with torch.no_grad():
        directions, eps = points.directions().detach().cpu().contiguous(), points.eps().detach().cpu().double()
    # The learned points, used as hesig uses any: the real oracle, one query per direction.
    search = PriorGuidedSearch(eps[:, None], EPS_MAX, {"split": "train", "learned": True})
    victims = torch.cat([train.images[:N_TRAIN], test.images[:N_TEST]])
    res = search.run(PlaintextOracle(model, victims, batch_size=4096, device=DEVICE), directions)
    feats = FingerprintFeatures.fit(res.eps[:N_TRAIN], res.censored[:N_TRAIN], EPS_MAX)
    x = feats.transform(res.eps, res.censored)
    t1 = time.time()
    net, rep = train_decoder(x[:N_TRAIN], victims[:N_TRAIN], ngf=32, epochs=DECODER_EPOCHS, patience=4, seed=SEED,
                             progress=False, device=DEVICE)
    net = net.cpu()
    with torch.no_grad():
        recon = torch.cat([net(x[N_TRAIN + s:N_TRAIN + s + 1000]) for s in range(0, N_TEST, 1000)])
    report = reconstruction_report(recon, victims[N_TRAIN:], test.labels[:N_TEST], train.images[:N_TRAIN],
                                   train.labels[:N_TRAIN], evaluator.model)
    a = report["attack"]
    entry = {"directions": k, "learn_epochs": epochs, "balance": balance, "queries_per_fingerprint": float(res.queries[N_TRAIN:].sum(1).double().mean()),
             "ssim": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"], "psnr": a["psnr_mean"],
             "class_recovery": a["class_recovery"], "flip_rate_victims": float((~res.censored[N_TRAIN:]).float().mean()),
             "best_epoch": rep.best_epoch, "learn_seconds": learn_seconds, "decoder_seconds": round(time.time() - t1),
             "n_train": N_TRAIN, "n_test": N_TEST, "decoder_epochs": DECODER_EPOCHS, **summary,
             "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
             "hashes": {"model": target.hash, "evaluator": evaluator.hash, "directions": tensor_hash(directions),
                        "eps": tensor_hash(eps.float())},
             "ran_on": describe_device(DEVICE), "torch_threads": torch.get_num_threads()}
    path = HERE / "learned.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    key = f"k{k}-e{epochs}" + (f"-b{balance:g}" if balance else "")
    key += (f"-n{N_TRAIN}" if (N_TRAIN, N_TEST) != (20000, 2000) else "") + (f"-{DEVICE.type}" if DEVICE.type != "cpu" else "")
    results[key] = entry
    atomic_write_json(path, dict(sorted(results.items())))
    print(json.dumps({key: v for key, v in entry.items() if key != "history"}), flush=True)


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 4 or not all(a.isdigit() and int(a) > 0 for a in sys.argv[1:3]):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) >= 3 else 3, float(sys.argv[3]) if len(sys.argv) == 4 else 0.0)
