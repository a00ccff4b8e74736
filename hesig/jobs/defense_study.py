"""Job ``hesig study-defenses`` (issue 19): every defense x strength x attacker, one table.

For one (dataset, target architecture) the study

1. trains (or reuses) the target M and an independent evaluator (class recovery), builds the
   directions, and fingerprints the attacker's own ``n_train`` training images through an
   undefended client: the training set of the **non-adaptive** decoder;
2. for each defense of the grid (a client policy, :mod:`hesig.oracles.policies`), measures what it
   costs honest users -- top-1 accuracy of the class the client acts on over the whole test split,
   and which honest traffic it refuses -- and runs the four kinds of honest traffic of
   :mod:`hesig.defenses.detector` through it (three disjoint sets: detector calibration,
   threshold, test);
3. for each attacker of that defense (:mod:`hesig.signature.attackers`) fingerprints the
   attacker's training images **through the same defense** (the owner simulates the client on its
   own data) and the ``n_test`` victims (test images), trains the **adaptive** decoder on the
   former, and scores it on the victims: PSNR, SSIM (full-map and interior), class recovery beside
   the mean-image and class-mean baselines, queries per fingerprint, and the detector's TPR at 1 %
   FPR on the victims' client views. The standard search's victims are also decoded by the
   non-adaptive decoder.

The folder is a run store: ``run.json`` pins the settings (not the grid: a cell depends only on
its defense, attacker and the settings, so rows can be added to a finished study or run apart);
every finished step (model, directions, clean decoder, honest traffic, cell) is recorded, so a
killed study resumes and a study with other settings is refused. Cells are
``steps/cell-<defense>--<attacker>.json`` (non-alphanumerics as ``_``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..core.defaults import DEFENSE_GRID, DEFENSE_SCALE, DETECTOR_FPR, EPS_MAX, FAMILIES
from ..core.errors import ClientRefusal, InvalidValueError
from ..core.runtime import resolve_device
from ..data import load_dataset
from ..defenses.detector import HONEST_KINDS, SearchDetector, honest_traffic, view_features
from ..defenses.utility import honest_accuracy
from ..evaluation.metrics import reconstruction_report
from ..models import load_model
from ..oracles.plaintext import PlaintextOracle
from ..oracles.policies import parse_client_policy
from ..signature.attackers import parse_attacker
from ..signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
from ..signature.decoders.train import decode
from ..signature.directions import Directions
from ..signature.fingerprints import Fingerprints
from .executor import Executor
from .models import directions_job
from .runstore import StepResult
from .study import SAMPLE_FIGURE, open_study

CELL_PREFIX = "cell-"


@dataclass
class DefenseStudySettings:
    """Scale and grid of one defense study; validated at construction (one-line errors).

    grid: ((defense spec, (attacker spec, ...)), ...): a defense is a client-policy spec added to
    ``strict`` (``none``: strict alone); attackers as in :mod:`hesig.signature.attackers`.
    """

    n_train: int = DEFENSE_SCALE["n_train"]
    n_test: int = DEFENSE_SCALE["n_test"]
    n_honest: int = DEFENSE_SCALE["n_honest"]
    family: str = DEFENSE_SCALE["family"]
    count: int = DEFENSE_SCALE["count"]
    eps_max: float = EPS_MAX
    decoder_ngf: int = DEFENSE_SCALE["decoder_ngf"]
    decoder_epochs: int = DEFENSE_SCALE["decoder_epochs"]
    decoder_patience: int = DEFENSE_SCALE["decoder_patience"]
    detector_fpr: float = DETECTOR_FPR
    seed: int = 0
    grid: tuple = field(default=DEFENSE_GRID)

    def __post_init__(self):
        if self.n_train < 20 or self.n_test < 1 or self.n_honest < 10:
            raise InvalidValueError(f"n_train must be >= 20, n_test >= 1 and n_honest >= 10, got "
                                    f"{self.n_train}, {self.n_test} and {self.n_honest}")
        if self.family not in FAMILIES:
            raise InvalidValueError(f"unknown direction family '{self.family}' (choose from {', '.join(FAMILIES)})")
        if self.family == "learned":  # its attackers vary the plain search; learned points have one query each
            raise InvalidValueError("the defense study's attackers search with bisection; the 'learned' family's "
                                    "query points are not supported there (choose another family)")
        if self.count < 1:
            raise InvalidValueError(f"the direction count must be >= 1, got {self.count}")
        SearchDetector(self.detector_fpr)
        grid, names = [], set()
        for defense, attackers in self.grid:
            policy_for(defense)
            if not attackers:
                raise InvalidValueError(f"defense '{defense}' has no attacker")
            for attacker in attackers:
                parse_attacker(attacker, eps_max=self.eps_max, directions=self.count)
                name = cell_name(defense, attacker)
                if name in names:
                    raise InvalidValueError(f"the grid names defense '{defense}' with attacker '{attacker}' twice")
                names.add(name)
            grid.append((str(defense), tuple(str(a) for a in attackers)))
        self.grid = tuple(grid)

    def key(self) -> dict[str, Any]:
        """What a resumed study must share with the folder's: everything but the grid. A cell depends
        only on its defense, its attacker and these settings, so a folder can be grown or cut by
        grid row and every finished cell is reused."""
        return {k: v for k, v in asdict(self).items() if k != "grid"}


def policy_for(defense: str):
    """The client policy of a grid defense: ``strict`` plus the defense (``none``: strict alone)."""
    if not isinstance(defense, str) or not defense.strip():
        raise InvalidValueError(f"a defense must be a client-policy spec or 'none', got {defense!r}")
    if defense.strip().lower() in ("strict", "undefended") or "strict" in defense.split("+"):
        raise InvalidValueError(f"a defense is added to 'strict': write 'none' or the defense alone, got '{defense}'")
    return parse_client_policy("strict" if defense.strip() == "none" else f"strict+{defense.strip()}")


def cell_name(defense: str, attacker: str) -> str:
    return CELL_PREFIX + re.sub(r"[^A-Za-z0-9.]+", "_", f"{defense}--{attacker}")


def run_defense_study(out: str | Path, dataset: str, arch: str, settings: DefenseStudySettings, *,
                      model_from: str | Path | None = None, evaluator_from: str | Path | None = None,
                      device: str | None = None, data_root=None, download: bool = False, progress: bool = False,
                      executor: Executor | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or resume) the study for one dataset and architecture; returns the cell dicts of the
    grid (:func:`collect_cells` adds each one's query ratio to the undefended search).

    executor: where the cells run (default: here, one after another). The models, directions, clean
    decoder and honest traffic are computed here first; each cell is then independent and seeded,
    so a Ray executor runs them at once and this process writes what they return.
    """
    common = {"data_root": data_root, "download": download}
    store, once, model_dir, evaluator, target_hash = open_study(
        out, "study-defenses", dataset, arch, settings, model_from=model_from, evaluator_from=evaluator_from,
        device=device, progress=progress, log=log, **common)
    out = store.root
    target = load_model(model_dir)
    requested, device = device, resolve_device(device)
    dir_file = out / "directions.safetensors"
    once("directions", lambda: directions_job(settings.family, settings.count, dir_file, dataset=dataset,
                                              seed=settings.seed, model_dir=model_dir, device=device, **common))
    directions = Directions.load(dir_file)
    train, test = load_dataset(dataset, "train", **common), load_dataset(dataset, "test", **common)
    need = settings.n_test + 3 * len(HONEST_KINDS) * settings.n_honest
    if len(test) < need or len(train) < settings.n_train:
        raise InvalidValueError(f"{dataset} has {len(train)} training and {len(test)} test images; this study needs "
                                f"{settings.n_train} and {need} (victims, then honest sessions)")
    train_x = train.images[:settings.n_train]
    test_x, test_y = test.images[:settings.n_test], test.labels[:settings.n_test]
    honest_x = test.images[settings.n_test:need].view(3, len(HONEST_KINDS), settings.n_honest, *test.shape)
    hashes = {"model": target_hash, "evaluator": evaluator.hash, "directions": directions.hash,
              "train_split": train.split_hash, "test_split": test.split_hash}

    def fingerprint(images: torch.Tensor, indices: torch.Tensor, defense: str, attacker: str, seed: int):
        # Resolved where it runs: a cell on a Ray worker uses that worker's device.
        return defended_fingerprints(target, directions, images, indices, defense, attacker, seed=seed,
                                     eps_max=settings.eps_max, dataset=dataset, device=resolve_device(requested))

    def decoder_for(fp: Fingerprints) -> FingerprintDecoder:
        return fit_decoder(fp, train_x, settings, device=resolve_device(requested))

    clean_dir = out / "clean-decoder"

    def clean_decoder() -> dict[str, Any]:
        fp, _ = fingerprint(train_x, train.indices[:settings.n_train], "none", "standard", settings.seed + 1)
        decoder = decoder_for(fp)
        decoder.save(clean_dir)
        return {"queries_per_fingerprint": float(fp.queries.sum(1).double().mean()),
                "epochs_run": decoder.meta["epochs_run"], "best_val_mse": decoder.meta["best_val_mse"]}

    once("clean-decoder", clean_decoder)
    clean = FingerprintDecoder.load(clean_dir)
    plans = []  # (defense, attacker, policy, honest record, detector, detector's test set), in grid order
    for defense, attackers in settings.grid:
        policy = policy_for(defense)

        def honest() -> dict[str, Any]:
            # The detector runs beside the defense; an evaluation budget refuses what it refuses.
            traffic_policy = dataclasses.replace(policy, evaluations_per_input=None)
            sets = [[honest_traffic(target.model, honest_x[s, k], kind, traffic_policy, seed=settings.seed + 7 * s + k,
                                    device=device).tolist() for k, kind in enumerate(HONEST_KINDS)] for s in range(3)]
            refused = {}
            if policy.evaluations_per_input is not None:
                for k, kind in enumerate(HONEST_KINDS):
                    counts = 10 ** np.asarray(sets[2][k])[:, 0]
                    refused[kind] = float((counts > policy.evaluations_per_input + 1e-9).mean())
            return {"defense": defense, "client_policy": policy.spec,
                    "honest_accuracy": honest_accuracy(target.model, test.images, test.labels, policy,
                                                       seed=settings.seed, device=device),
                    "honest_refused": refused, "honest_features": sets}

        record = once(f"honest-{re.sub(r'[^A-Za-z0-9.]+', '_', defense)}", honest)
        sets = [np.concatenate([np.asarray(k, dtype=np.float64) for k in s]) for s in record["honest_features"]]
        detector = SearchDetector(settings.detector_fpr).fit(sets[0], sets[1])
        plans += [(defense, attacker, policy, record, detector, sets[2]) for attacker in attackers]

    def cell(i: int) -> StepResult:
        """Cell ``i`` of the plan: its record and sample reconstructions (written by the caller,
        so the cell can run on an executor's worker)."""
        defense, attacker, policy, record, detector, honest_test = plans[i]
        t0 = time.perf_counter()
        base = {"dataset": dataset, "arch": arch, "defense": defense, "client_policy": policy.spec,
                "attacker": attacker, "honest_accuracy": record["honest_accuracy"],
                "honest_refused": record["honest_refused"], "n_train": settings.n_train,
                "n_test": settings.n_test, "count": settings.count, "family": settings.family,
                "hashes": hashes, "seed": settings.seed, "hesig_version": __version__}
        try:
            fp_test, views = fingerprint(test_x, test.indices[:settings.n_test], defense, attacker, settings.seed + 2)
            fp_train, _ = fingerprint(train_x, train.indices[:settings.n_train], defense, attacker, settings.seed + 1)
        except ClientRefusal as exc:
            return {**base, "refused": str(exc), "decoders": {}}, {}
        decoders = {"adaptive": decoder_for(fp_train)}
        if attacker == "standard":
            decoders["non-adaptive"] = clean
        scored, files = {}, {}
        for name, decoder in decoders.items():
            recon = decoder_reconstruct(decoder, fp_test)
            report = reconstruction_report(recon, test_x, test_y, train.images, train.labels, evaluator.model)
            scored[name] = {"psnr": report["attack"]["psnr_mean"], "psnr_std": report["attack"]["psnr_std"],
                            "ssim": report["attack"]["ssim_mean"], "ssim_std": report["attack"]["ssim_std"],
                            "ssim_full_map": report["attack"]["ssim_full_map_mean"],
                            "class_recovery": report["attack"]["class_recovery"]}
            if "baselines" not in base:
                base["baselines"] = {k: report[k] for k in ("baseline_mean_image", "baseline_class_mean")}
            files[f"samples/{cell_name(defense, attacker)[len(CELL_PREFIX):]}-{name}.safetensors"] = (
                {"reconstructions": recon[:SAMPLE_FIGURE], "indices": fp_test.indices[:SAMPLE_FIGURE]},
                {"defense": defense, "attacker": attacker, "decoder": name})
        return {**base, "refused": None, "decoders": scored,
                "queries_per_fingerprint": float(fp_test.queries.sum(1).double().mean()),
                "censored_fraction": float(fp_test.censored.float().mean()),
                "detection": detector.report(views, honest_test),
                "cell_seconds": round(time.perf_counter() - t0, 1)}, files

    def saved(i: int, cell_record: dict[str, Any]) -> None:
        defense, attacker = plans[i][:2]
        if cell_record["refused"]:
            log(f"[cell] {defense} / {attacker}: refused ({cell_record['refused']})")
            return
        best = max(cell_record["decoders"].values(), key=lambda r: r["ssim"])
        log(f"[cell] {arch} {defense} / {attacker}: SSIM {best['ssim']:.3f} PSNR {best['psnr']:.2f} "
            f"class {best['class_recovery']:.3f} q/fp {cell_record['queries_per_fingerprint']:.0f} "
            f"acc {cell_record['honest_accuracy']:.4f} TPR@{settings.detector_fpr:g} {cell_record['detection']['tpr']:.2f}")

    return store.compute_steps([cell_name(d, a) for d, a, *_ in plans], cell, executor=executor, on_saved=saved)


def defended_fingerprints(target, directions: Directions, images: torch.Tensor, indices: torch.Tensor, defense: str,
                          attacker: str, *, seed: int, eps_max: float, dataset: str, device=None
                          ) -> tuple[Fingerprints, np.ndarray]:
    """Fingerprints of ``images`` [n, C, H, W] through a plaintext client under ``defense`` (seeded
    with ``seed``) by ``attacker``, and the client's view features [n, 3]; ClientRefusal passes."""
    policy = policy_for(defense)
    search = parse_attacker(attacker, eps_max=eps_max, directions=directions.count)
    oracle = PlaintextOracle(target.model, images, policy=policy, seed=seed, device=device)
    res = search.run(oracle, directions.vectors)
    meta = {"dataset": dataset, "model_hash": target.hash, "directions_hash": directions.hash,
            "client_policy": policy.spec, "attacker": attacker, "search": search.params()}
    return Fingerprints(res.eps, res.censored, res.queries, indices, meta), view_features(oracle.view)


def fit_decoder(fp: Fingerprints, images: torch.Tensor, settings: DefenseStudySettings, device="cpu") -> FingerprintDecoder:
    """The study's decoder: trained on fingerprints ``fp`` of ``images`` on ``device`` (seeded: same
    inputs, same weights on one device)."""
    feats = FingerprintFeatures.fit(fp.eps, fp.censored, settings.eps_max)
    net, rep = train_decoder(feats.transform(fp.eps, fp.censored), images, ngf=settings.decoder_ngf,
                             epochs=settings.decoder_epochs, patience=settings.decoder_patience,
                             seed=settings.seed, device=device, progress=False)
    return FingerprintDecoder(net.cpu(), feats, {**fp.meta, "epochs_run": rep.epochs_run,
                                                 "best_val_mse": rep.best_val_mse})


def decoder_reconstruct(decoder: FingerprintDecoder, fp: Fingerprints) -> torch.Tensor:
    """A decoder's reconstructions of fingerprints made through any client policy and attacker:
    only the model and directions must match (the policy and search are what the study varies)."""
    for key in ("model_hash", "directions_hash"):
        if decoder.meta.get(key) != fp.meta.get(key):
            raise InvalidValueError(f"decoder and fingerprints differ in {key}")
    return decode(decoder.network, decoder.features.transform(fp.eps, fp.censored))


def collect_cells(*study_dirs: str | Path) -> list[dict[str, Any]]:
    """Cell dicts of the given study folders (finished or partial), with ``query_ratio`` to the
    same study's undefended standard search."""
    out = []
    for d in study_dirs:
        cells = [json.loads(p.read_text()) for p in sorted((Path(d) / "steps").glob(f"{CELL_PREFIX}*.json"))]
        ref = next((c["queries_per_fingerprint"] for c in cells
                    if c["defense"] == "none" and c["attacker"] == "standard" and not c.get("refused")), None)
        for c in cells:
            q = c.get("queries_per_fingerprint")
            c["query_ratio"] = None if (q is None or not ref) else q / ref
        out.extend(cells)
    return out


__all__ = ["DefenseStudySettings", "cell_name", "collect_cells", "defended_fingerprints", "fit_decoder", "policy_for",
           "run_defense_study"]
