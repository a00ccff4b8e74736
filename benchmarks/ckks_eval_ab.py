"""One CKKS evaluation, this tree against an earlier commit, interleaved in one run. Prints JSON.

    python benchmarks/ckks_eval_ab.py --model runs/mnist-hecnn/model --baseline-ref 2b48cc2 \
        --out benchmarks/ckks_eval_ab.json

Why: benchmarks/ckks.py measures today's path end to end, but its "before" path runs today's
evaluation code. This isolates what changed inside one evaluation (and one encryption, and one
session setup) between two commits, on the same machine in the same minutes: the baseline
commit is checked out into a temporary git worktree, and each side runs in its own process,
alternating (baseline, current, baseline, current, ...) so that a slow spell of the machine
hits both. Each process encrypts one test image, opens a session and times ``--evaluations``
evaluations of the same 4,095 random perturbations; it reports seconds and the decrypted logits'
largest distance from the plaintext model's. ``--processes 2`` times the split path
(``--ckks-processes 2``) instead, its helpers started before the clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from hesig.data import load_dataset
from hesig.models import load_model
from hesig.oracles.ckks import CKKSClient, CKKSParameters, CKKSServer, poly_cnn
model_path, data_root, evaluations, seed, processes = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
target = load_model(model_path)
poly = poly_cnn(target.model, target.in_shape, target.arch)
image = load_dataset("mnist", "test", data_root).images[0].double().numpy()
params = CKKSParameters()
pert = np.random.default_rng(seed).normal(0, 0.05, (params.slots - 1,) + tuple(target.in_shape))
if processes == 1:
    client = CKKSClient(params, num_outputs=poly.fc2_weight.shape[0], policy="strict")
    server = CKKSServer(client.context_message(), poly)
else:  # the split path (--ckks-processes): both parties' helpers started and answering first
    from hesig.oracles.ckks.client import ENCRYPT_LOOP
    from hesig.oracles.ckks.helpers import HelperPool
    from hesig.oracles.ckks.parallel import ParallelServer, server_pool
    pool = server_pool(processes)
    for p in (pool, HelperPool.shared(ENCRYPT_LOOP, processes)):
        p.ready()
    client = CKKSClient(params, num_outputs=poly.fc2_weight.shape[0], policy="strict", processes=processes)
    server = ParallelServer(client.context_message(), poly, pool)
t0 = time.perf_counter(); message = client.encrypt(image, session=0); t1 = time.perf_counter()
session = server.open_session(message); t2 = time.perf_counter()
seconds, result = [], None
for _ in range(evaluations):
    t = time.perf_counter(); result = server.evaluate(session, pert); seconds.append(time.perf_counter() - t)
logits = client.decrypt_logits(result)
want = poly.forward(image[None] + pert)
print(json.dumps({"encrypt_seconds": t1 - t0, "setup_seconds": t2 - t1, "evaluation_seconds": seconds,
                  "upload_bytes": len(message), "max_abs_logit_error": float(np.abs(logits - want).max())}))
"""


def run_side(tree: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(Path(args.model).resolve()), args.data_root or "",
                          str(args.evaluations), str(args.seed), str(args.processes)], env=env, cwd=tree,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {tree} side failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--baseline-ref", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations: each side runs this many processes")
    ap.add_argument("--evaluations", type=int, default=3, help="evaluations timed per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1, help="processes per party (2+: the split path, --ckks-processes)")
    ap.add_argument("--data-root", default=os.environ.get("HESIG_DATA"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ref = subprocess.run(["git", "rev-parse", "--verify", f"{args.baseline_ref}^{{commit}}"], cwd=REPO,
                         capture_output=True, text=True)
    if ref.returncode != 0:
        raise SystemExit(f"--baseline-ref {args.baseline_ref!r} is not a commit of this repository")
    commit = ref.stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    runs: dict[str, list] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="hesig-ab-") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), commit], cwd=REPO, check=True)
        try:
            for r in range(args.rounds):
                runs["baseline"].append(run_side(worktree, args))
                runs["current"].append(run_side(REPO, args))
                print(json.dumps({"round": r, **{k: v[-1]["evaluation_seconds"] for k, v in runs.items()}}), file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)

    def summary(side: list) -> dict:
        evals = [s for run in side for s in run["evaluation_seconds"]]
        return {"evaluation_seconds_median": statistics.median(evals), "evaluation_seconds": evals,
                "encrypt_seconds_median": statistics.median(run["encrypt_seconds"] for run in side),
                "setup_seconds_median": statistics.median(run["setup_seconds"] for run in side),
                "upload_bytes": side[0]["upload_bytes"],
                "max_abs_logit_error": max(run["max_abs_logit_error"] for run in side)}

    out = {"baseline_commit": commit, "current_commit": head, "current_tree_dirty": dirty,
           "cpus": os.cpu_count(), "processes": args.processes, "rounds": args.rounds, "evaluations_per_round": args.evaluations,
           "baseline": summary(runs["baseline"]), "current": summary(runs["current"])}
    for stage in ("evaluation", "encrypt", "setup"):
        out[f"{stage}_speedup"] = out["baseline"][f"{stage}_seconds_median"] / out["current"][f"{stage}_seconds_median"]
    text = json.dumps(out, indent=2)
    if args.out:
        sys.path.insert(0, str(REPO))
        from hesig.core.io import atomic_write_json
        atomic_write_json(args.out, out)
    print(text)
    return out


if __name__ == "__main__":
    main()
