"""Cost of training He et al.'s CIFAR-10 target (cifar_cnn) on this machine: one Adam step.

    python benchmarks/cifar_cnn_step.py [--threads 1] [--device cpu]

Prints JSON: seconds per step of batch 128 (median of 5 after 2 warm-up steps) and the implied
minutes per CIFAR-10 epoch (50,000 images). Used to decide that the CIFAR-10 columns of He et al.'s
tables need a GPU.
"""

import argparse
import json
import statistics
import time

import torch

from hesig.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("cifar_cnn", (3, 32, 32), 10).to(args.device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(128, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (128,), device=args.device)
    times = []
    for step in range(7):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    print(json.dumps({"device": args.device, "threads": args.threads, "batch": 128, "seconds_per_step": per_step,
                      "minutes_per_epoch": per_step * 391 / 60}, indent=1))


if __name__ == "__main__":
    main()
