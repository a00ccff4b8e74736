"""CKKS confirmation of one study cell: the same defense and attacker through real TenSEAL CKKS.

    python results/defenses/ckks_confirm.py STUDY_DIR DEFENSE ATTACKER [N [CKKS_POLICY]]

Rebuilds the cell's adaptive decoder exactly as the study did (the attacker's own training
images fingerprinted through the plaintext client under DEFENSE, same seeds), then fingerprints
the study's first N victims (default 20) twice with ATTACKER: through the plaintext client, and
through ``--oracle ckks`` -- a CKKSClient that owns the secret key and applies DEFENSE to what it
decrypts, a server that holds only the public context -- chunk by chunk through the run store
(resumable: rerun to continue). Writes results/defenses/ckks_confirm-<defense>--<attacker>.json:
both reconstructions' metrics on the same victims, ε agreement, queries and CKKS costs.

CKKS_POLICY (default: strict + DEFENSE) lets the CKKS client run a policy whose plaintext
equivalent for this attacker is DEFENSE: the default client, ``strict+budget:1+fresh-keys``,
answers one result per input, which for a one-round attacker (``grid:G``) is an evaluation
budget of one result's G x k queries (``evaluations:4000``); the plaintext oracle counts a
reply per call of its forward batch, so it simulates the evaluation budget instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from hesig.core.io import atomic_write_json
from hesig.data import load_dataset
from hesig.evaluation.metrics import reconstruction_report
from hesig.jobs.defense_study import (DefenseStudySettings, decoder_reconstruct, defended_fingerprints, fit_decoder,
                                      policy_for)
from hesig.jobs.fingerprint import fingerprint_rows, job_config
from hesig.models import load_model
from hesig.oracles.policies import parse_client_policy
from hesig.oracles.registry import oracle_kind
from hesig.signature.attackers import parse_attacker
from hesig.signature.directions import Directions

HERE = Path(__file__).resolve().parent


def main(study: Path, defense: str, attacker: str, n: int = 20, ckks_policy: str | None = None) -> None:
    config = json.loads((study / "run.json").read_text())["config"]
    dataset, arch = config.pop("dataset"), config.pop("arch")
    config.pop("grid", None)  # folders pinned before the grid left the pinned settings carry it
    settings = DefenseStudySettings(**config, grid=((defense, (attacker,)),))
    target, evaluator = load_model(study / "model"), load_model(study / "evaluator")
    directions = Directions.load(study / "directions.safetensors")
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    train_x = train.images[:settings.n_train]
    victims, labels, indices = test.images[:n], test.labels[:n], test.indices[:n]
    common = dict(eps_max=settings.eps_max, dataset=dataset)

    t0 = time.perf_counter()
    fp_train, _ = defended_fingerprints(target, directions, train_x, train.indices[:settings.n_train], defense, attacker,
                                        seed=settings.seed + 1, **common)
    decoder = fit_decoder(fp_train, train_x, settings)
    decoder_seconds = time.perf_counter() - t0

    plain, _ = defended_fingerprints(target, directions, victims, indices, defense, attacker, seed=settings.seed + 2,
                                     **common)
    policy = policy_for(defense) if ckks_policy is None else parse_client_policy(ckks_policy)
    kind = oracle_kind("ckks")
    make = kind.factory(target, layout="batched", client_policy=policy.spec)
    search = parse_attacker(attacker, eps_max=settings.eps_max, directions=directions.count)
    tag = f"{defense}--{attacker}".replace(":", "_").replace("+", "_")
    out = study / "ckks" / f"{tag}.safetensors"
    out.parent.mkdir(exist_ok=True)
    meta = {**job_config(dataset, "test", test.split_hash, target, directions, "ckks", make.describe()),
            "attacker": attacker}
    t1 = time.perf_counter()
    ckks = fingerprint_rows(make, directions.vectors, victims, indices, search, out, meta, chunk_size=1, progress=False)
    ckks_seconds = time.perf_counter() - t1

    report = {}
    for name, fp in (("plaintext", plain), ("ckks", ckks)):
        fp.meta.setdefault("model_hash", target.hash)
        fp.meta.setdefault("directions_hash", directions.hash)
        recon = decoder_reconstruct(decoder, fp)
        rep = reconstruction_report(recon, victims, labels, train.images, train.labels, evaluator.model)
        report[name] = {**{k: rep["attack"][k] for k in ("psnr_mean", "ssim_mean", "ssim_full_map_mean", "class_recovery")},
                        "queries_per_fingerprint": float(fp.queries.sum(1).double().mean()),
                        "censored_fraction": float(fp.censored.float().mean())}
    both = ~plain.censored & ~ckks.censored
    rel = ((ckks.eps - plain.eps).abs() / plain.eps)[both]
    summary = {
        "study": str(study), "dataset": dataset, "arch": arch, "defense": defense, "ckks_client_policy": policy.spec,
        "attacker": attacker, "victims": n, "directions": directions.count, "n_train": settings.n_train,
        "metrics": report, "baseline_class_mean": rep["baseline_class_mean"],
        "eps_agreement": {"censored_status_agreement": float((plain.censored == ckks.censored).float().mean()),
                          "identical_pairs": float((plain.eps == ckks.eps).float().mean()),
                          "median_relative_difference": float(rel.median()) if rel.numel() else None,
                          "max_relative_difference": float(rel.max()) if rel.numel() else None},
        "ckks_costs": ckks.meta.get("oracle_costs"), "ckks_compute_seconds": ckks.meta.get("compute_seconds"),
        "ckks_seconds_per_fingerprint": round(ckks.meta["compute_seconds"] / n, 1) if ckks.meta.get("compute_seconds") else None,
        "seconds_this_run": {"decoder": round(decoder_seconds, 1), "ckks": round(ckks_seconds, 1)},
        "command": f"python results/defenses/ckks_confirm.py {study} {defense} {attacker} {n}"
                   + ("" if ckks_policy is None else f" {ckks_policy}"),
        "torch": torch.__version__,
    }
    atomic_write_json(HERE / f"ckks_confirm-{tag}.json", summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:5]), *sys.argv[5:6])
