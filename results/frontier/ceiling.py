"""How far 400 queries can go: the attack's decoder fed the best B-bit code a network can learn.

    python results/frontier/ceiling.py BITS [BITS ...]   (HESIG_DATA set)

Every oracle answer is one bit, so a fingerprint of Q queries carries at most Q bits about the
victim's image, whatever the directions and however adaptively they are chosen. This script
measures what the attack's own decoder makes of Q bits when the bits are the best a network can
learn to send: an encoder (two stride-2 convolutions, a linear layer to B logits) reads the image
and sends B = Q binary bits (sign, straight-through gradient; Bengio et al. 2013), and a
:class:`~hesig.models.dcgan.DCGANDecoder` of the frontier's size (ngf 32, the paper's generator)
turns them back, trained jointly with the MSE loss. The scale is results/frontier/screen.py's: the
first 20,000 MNIST training images (a seeded tenth held out for model selection), 10 epochs, the
first 2,000 test images scored with hesig's metrics and the hecnn evaluator, so its rows stand
beside screen.json's.

This is a reference, not a bound: a better encoder or decoder could do better, and an attacker
cannot choose its bits freely (each is a label comparison along a perturbation). It says how much
of the gap to a target lies in the channel (Q bits) and how much in the attack's use of it.

Writes results/frontier/ceiling.json (one entry per BITS, merged with those already there).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from hesig.core.io import atomic_write_json
from hesig.core.runtime import describe_device
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.models import load_model
from hesig.models.dcgan import DCGANDecoder
from hesig.models.training import train_epochs

HERE = Path(__file__).resolve().parent
N_TRAIN, N_TEST, EPOCHS, NGF, BATCH, LR, SEED = 20000, 2000, 10, 32, 128, 2e-3, 0


class BinaryEncoder(nn.Module):
    """Images [n, 1, 28, 28] -> bits [n, B] in {-1, +1} (straight-through sign of tanh logits)."""

    def __init__(self, bits: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(64 * 7 * 7, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = torch.tanh(self.net(x))
        return soft + (torch.sign(soft) - soft).detach()  # forward: exact bits; backward: tanh's gradient


def run(bits: int, train_x: torch.Tensor, test_x: torch.Tensor, test_y, train, evaluator) -> dict:
    """Train encoder + decoder jointly on train_x [N_TRAIN, 1, 28, 28]; score the decoder on test_x."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    perm = torch.randperm(N_TRAIN, generator=gen)
    val_idx, train_idx = perm[:N_TRAIN // 10], perm[N_TRAIN // 10:]
    encoder, decoder = BinaryEncoder(bits), DCGANDecoder(bits, (1, 28, 28), ngf=NGF)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=LR, betas=(0.5, 0.999))
    steps = -(-len(train_idx) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * steps)
    mse = nn.MSELoss()
    best, best_state, best_epoch = float("inf"), None, 0
    t0 = time.time()
    for epoch in train_epochs([opt], lambda idx: mse(decoder(encoder(train_x[idx])), train_x[idx]), train_idx,
                              batch_size=BATCH, epochs=EPOCHS, generator=gen, modules=[encoder, decoder],
                              schedulers=[sched], min_batch=2):
        encoder.eval(), decoder.eval()
        with torch.no_grad():
            val = float(mse(decoder(encoder(train_x[val_idx])), train_x[val_idx]))
        if val < best:
            best, best_epoch = val, epoch.number
            best_state = copy.deepcopy((encoder.state_dict(), decoder.state_dict()))
    encoder.load_state_dict(best_state[0]), decoder.load_state_dict(best_state[1])
    encoder.eval(), decoder.eval()
    with torch.no_grad():
        recon = torch.cat([decoder(encoder(test_x[s:s + 1000])) for s in range(0, N_TEST, 1000)])
    report = reconstruction_report(recon, test_x, test_y, train.images[:N_TRAIN], train.labels[:N_TRAIN], evaluator.model)
    a = report["attack"]
    return {"bits": bits, "ssim": a["ssim_mean"], "ssim_full_map": a["ssim_full_map_mean"], "psnr": a["psnr_mean"],
            "class_recovery": a["class_recovery"], "best_epoch": best_epoch, "best_val_mse": best,
            "seconds": round(time.time() - t0), "n_train": N_TRAIN, "n_test": N_TEST, "epochs": EPOCHS, "ngf": NGF,
            "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
            "evaluator": evaluator.hash, "train_split": train.split_hash,
            "ran_on": describe_device("cpu"), "torch_threads": torch.get_num_threads()}


def main(bits_list: list[int]) -> None:
    evaluator = load_model("runs/mnist-hecnn/evaluator")
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    path = HERE / "ceiling.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for bits in bits_list:
        entry = run(bits, train.images[:N_TRAIN], test.images[:N_TEST], test.labels[:N_TEST], train, evaluator)
        results[str(bits)] = entry
        print(json.dumps(entry), flush=True)
        atomic_write_json(path, dict(sorted(results.items(), key=lambda kv: int(kv[0]))))


if __name__ == "__main__":
    if len(sys.argv) < 2 or not all(a.isdigit() and int(a) > 0 for a in sys.argv[1:]):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    main([int(a) for a in sys.argv[1:]])
