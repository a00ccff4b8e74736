"""Learned query points at the screening's scale: the model owner trains its K (direction, ε) pairs.

    python results/frontier/learned.py K [EPOCHS [BALANCE]]   (HESIG_DATA set; hecnn of results/reproduce.sh)
    LEARNED_DEVICE=cuda N_TRAIN=60000 N_TEST=10000 python results/frontier/learned.py ...   (GPU; full scale)

results/frontier/ceiling.py found that 400 *learned* bits, read by the attack's own decoder, give
an interior SSIM far above what 400 queries of random directions give: the gap lies in how the
attack spends its bits, not in how many it has. The model owner holds M, so it can choose its
query points by gradient descent on its own images: hesig's ``learned`` direction family
(:mod:`hesig.signature.directions.learned`, equations there; ``hesig directions --family
learned``) trains them with the owner's first N_TRAIN training images, EPOCHS epochs (default 3)
and the fair-coin weight BALANCE (default 0).

Then the learned points are used as any other: the victims' and the owner's training images are
fingerprinted through the real plaintext oracle at the points' own knots (one query per
direction), and a fresh decoder is trained on those fingerprints exactly as
results/frontier/screen.py does (same scale: the first 20,000 training images -- also the
points' training set, the owner's data -- and the first 2,000 test images; ngf 32, 10 epochs;
log features). Its rows stand beside screen.json's ``prior1-k400/log/mse``. The full-scale run
with the attack's 20-epoch decoder is ``PARTS=learned bash results/frontier/run.sh``.

Writes results/frontier/learned.json (one entry per K, EPOCHS and BALANCE, with the hashes of the
learned directions and ε). The points themselves are not saved; a rerun with the same seed trains them again.
LEARNED_DEVICE (default cpu) is where the points, the fingerprints and the decoder are computed;
N_TRAIN / N_TEST (default 20,000 / 2,000) set the scale. Entries at other than the default scale
or device carry them in their key (``-n60000`` / ``-cuda``), so rows of one scale stay together.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from hesig.core.io import atomic_write_json, tensor_hash
from hesig.core.runtime import describe_device
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.models import load_model
from hesig.oracles.plaintext import PlaintextOracle
from hesig.signature.decoders import FingerprintFeatures, train_decoder
from hesig.signature.directions import make_directions

HERE = Path(__file__).resolve().parent
DECODER_EPOCHS, EPS_MAX, SEED = 10, 60.0, 0


def scale() -> tuple[int, int, torch.device]:
    """N_TRAIN, N_TEST and LEARNED_DEVICE from the environment, checked (one line if bad)."""
    try:
        n_train, n_test = int(os.environ.get("N_TRAIN", 20000)), int(os.environ.get("N_TEST", 2000))
        device = torch.device(os.environ.get("LEARNED_DEVICE", "cpu"))
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"learned.py: bad N_TRAIN, N_TEST or LEARNED_DEVICE ({exc})") from None
    if not (20 <= n_train <= 60000 and 1 <= n_test <= 10000):
        raise SystemExit(f"learned.py: N_TRAIN must be in 20..60000 and N_TEST in 1..10000, got {n_train}, {n_test}")
    return n_train, n_test, device


def main(k: int, epochs: int, balance: float = 0.0) -> None:
    n_train, n_test, device = scale()
    target, evaluator = load_model("runs/mnist-hecnn/model"), load_model("runs/mnist-hecnn/evaluator")
    model = target.model.eval().to(device)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    torch.manual_seed(SEED)
    dirs = make_directions("learned", k, train.shape, SEED, model=model, train_images=train.images,
                           learn_epochs=epochs, learn_balance=balance, learn_images=n_train, eps_max=EPS_MAX)
    for record in dirs.params["history"]:
        print(json.dumps(record), flush=True)
    # The learned points, used as hesig uses any: the real oracle, one query per direction.
    victims = torch.cat([train.images[:n_train], test.images[:n_test]])
    res = dirs.point_search().run(PlaintextOracle(model, victims, batch_size=4096, device=device), dirs.vectors)
    feats = FingerprintFeatures.fit(res.eps[:n_train], res.censored[:n_train], EPS_MAX)
    x = feats.transform(res.eps, res.censored)
    t1 = time.time()
    net, rep = train_decoder(x[:n_train], victims[:n_train], ngf=32, epochs=DECODER_EPOCHS, patience=4, seed=SEED,
                             progress=False, device=device)
    net = net.cpu()
    with torch.no_grad():
        recon = torch.cat([net(x[n_train + s:n_train + s + 1000]) for s in range(0, n_test, 1000)])
    report = reconstruction_report(recon, victims[n_train:], test.labels[:n_test], train.images[:n_train],
                                   train.labels[:n_train], evaluator.model)
    a = report["attack"]
    entry = {"directions": k, "learn_epochs": epochs, "balance": balance, "queries_per_fingerprint": float(res.queries[n_train:].sum(1).double().mean()),
             "ssim": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"], "psnr": a["psnr_mean"],
             "class_recovery": a["class_recovery"], "flip_rate_victims": float((~res.censored[n_train:]).float().mean()),
             "best_epoch": rep.best_epoch, "learn_seconds": round(dirs.params["learn_seconds"]),
             "decoder_seconds": round(time.time() - t1),
             "n_train": n_train, "n_test": n_test, "decoder_epochs": DECODER_EPOCHS,
             "tau": dirs.params["tau"], "history": dirs.params["history"],
             "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
             "hashes": {"model": target.hash, "evaluator": evaluator.hash, "directions": tensor_hash(dirs.vectors),
                        "eps": tensor_hash(dirs.knots[:, 0].float())},
             "ran_on": describe_device(device), "torch_threads": torch.get_num_threads()}
    path = HERE / "learned.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    key = f"k{k}-e{epochs}" + (f"-b{balance:g}" if balance else "")
    key += (f"-n{n_train}" if (n_train, n_test) != (20000, 2000) else "") + (f"-{device.type}" if device.type != "cpu" else "")
    results[key] = entry
    atomic_write_json(path, dict(sorted(results.items())))
    print(json.dumps({key: v for key, v in entry.items() if key != "history"}), flush=True)


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 4 or not all(a.isdigit() and int(a) > 0 for a in sys.argv[1:3]):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) >= 3 else 3, float(sys.argv[3]) if len(sys.argv) == 4 else 0.0)
