"""The leakage study (issue 4): reconstruction quality against direction family, count and query budget.

For one (dataset, target architecture) the study

1. trains (or reuses) the target M and an independent evaluator for class recovery;
2. for each family builds ``max(counts)`` directions once (every family but ``learned`` is
   prefix-consistent, so the first k are exactly the set of k; ``learned`` builds one set of
   query points per count, in ``learned-k<count>/``, each searched at its own knots: M = 1
   query per pair, whatever the precisions), and fingerprints ``n_train`` training and
   ``n_test`` test images through the plaintext oracle at each search precision
   (coarse points G, relative tolerance rtol; or ``("prior", M)``: the prior-guided search,
   M queries per pair at the quantiles of the owner's ``PRIOR_ROWS`` training fingerprints at
   the paper's precision, :mod:`hesig.signature.prior_search`);
3. for every (family, precision, count) trains a DCGAN decoder on the first ``count`` columns of
   the training fingerprints and scores it on the test fingerprints: PSNR, SSIM (data_range 1.0),
   class recovery, beside the mean-image and class-mean baselines, with the mean oracle queries
   per test fingerprint (the sum over the first ``count`` directions of the queries each pair cost).

The study folder is a run store (:mod:`hesig.jobs.runstore`): ``run.json`` pins the settings,
every finished step (model, directions, fingerprints, cell) is recorded, so an interrupted study
resumes and a study with other settings is refused. Cells are step records
``steps/cell-<family>_g<G>_r<rtol>_k<count>.json``; :func:`collect_cells` gathers them for tables
and plots.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..core.defaults import (COARSE_POINTS, DECODER_FEATURES, DECODER_LOSSES, EPS_MAX, FAMILIES, LEARN_BALANCE,
                             LEARN_EPOCHS, PRIOR, PRIOR_ROWS, RTOL, STUDY_COUNTS, STUDY_FAMILIES, STUDY_MIX,
                             STUDY_PRECISIONS, STUDY_SCALE)
from ..core.errors import InvalidValueError, MismatchError
from ..core.io import ensure_writable_dir, load_tensors
from ..core.runtime import describe_device, resolve_device
from ..data import load_dataset
from ..evaluation import viz
from ..evaluation.metrics import reconstruction_report
from ..models import load_model
from ..models.dcgan import check_mlp, check_res
from ..signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
from ..signature.directions import FAMILIES as FAMILY_REGISTRY, Directions
from ..signature.directions.learned import check_learn_options
from ..signature.fingerprints import Fingerprints
from ..signature.prior_search import MAX_PRIOR_STEPS
from .demo import DEMO_SETTINGS
from .executor import Executor
from .fingerprint import fingerprint_job
from .models import directions_job, train_model_job
from .runstore import RunStore, StepResult

#: The paper's search precision (8 coarse points, rtol 1e-2) -- the grid's default.
DEFAULT_PRECISION = STUDY_PRECISIONS[0]
#: Step-name prefix of the study's cells (steps/cell-<family>_g<G>_r<rtol>_k<count>.json).
CELL_PREFIX = "cell-"
#: Test victims whose reconstructions each cell keeps for figures.
SAMPLE_FIGURE = 10


@dataclass
class StudySettings:
    """Scale of one study run. Validated at construction (one-line ``InvalidValueError``).

    n_train / n_test: images fingerprinted from the start of each split (the attacker's decoder
    training set, and the victims scored). counts: direction counts, read off as prefixes.
    decoder_ngf / decoder_epochs / decoder_patience / decoder_loss / decoder_features / decoder_mlp:
    the DCGAN decoder (see hesig.signature.decoders; loss "mse" or "ssim-l1", features "log" or
    "rank", mlp the fully connected hidden layers before its projection, res the residual blocks at
    full resolution before its output convolution). learn_epochs /
    learn_balance / learn_images: the ``learned`` family's training (hesig.signature.directions.learned).
    """

    n_train: int = STUDY_SCALE["n_train"]
    n_test: int = STUDY_SCALE["n_test"]
    counts: tuple[int, ...] = STUDY_COUNTS
    eps_max: float = EPS_MAX
    decoder_ngf: int = STUDY_SCALE["decoder_ngf"]
    decoder_epochs: int = STUDY_SCALE["decoder_epochs"]
    decoder_patience: int = STUDY_SCALE["decoder_patience"]
    seed: int = 0
    mix: str = STUDY_MIX
    decoder_loss: str = DECODER_LOSSES[0]
    decoder_features: str = DECODER_FEATURES[0]
    decoder_mlp: int = 0
    decoder_res: int = 0
    learn_epochs: int = LEARN_EPOCHS
    learn_balance: float = LEARN_BALANCE
    learn_images: int | None = None

    def __post_init__(self):
        if self.n_train < 20 or self.n_test < 1:
            raise InvalidValueError(f"n_train must be >= 20 and n_test >= 1, got {self.n_train} and {self.n_test}")
        counts = tuple(sorted({int(c) for c in self.counts}))
        if not counts or counts[0] < 1:
            raise InvalidValueError(f"direction counts must be positive integers, got {self.counts}")
        self.counts = counts
        if self.decoder_loss not in DECODER_LOSSES:
            raise InvalidValueError(f"decoder loss must be one of {', '.join(DECODER_LOSSES)}, got {self.decoder_loss!r}")
        if self.decoder_features not in DECODER_FEATURES:
            raise InvalidValueError(f"decoder features must be one of {', '.join(DECODER_FEATURES)}, "
                                    f"got {self.decoder_features!r}")
        self.decoder_mlp = check_mlp(self.decoder_mlp)
        self.decoder_res = check_res(self.decoder_res)
        check_learn_options(self.learn_epochs, self.learn_balance, self.learn_images)

    def key(self) -> dict[str, Any]:
        """What must match for a resumed study to reuse artifacts (the default loss and features
        left out, so studies pinned before the options resume)."""
        key = asdict(self)
        for name, default in (("decoder_loss", DECODER_LOSSES[0]), ("decoder_features", DECODER_FEATURES[0]),
                              ("decoder_mlp", 0), ("decoder_res", 0), ("learn_epochs", LEARN_EPOCHS), ("learn_balance", LEARN_BALANCE),
                              ("learn_images", None)):
            if key[name] == default:
                del key[name]
        return key


def _tag(coarse_points: int | str, rtol: float) -> str:
    """File and step tag of a precision: g<G>_r<rtol>, or prior<M> for ("prior", M)."""
    return f"{PRIOR}{int(rtol)}" if coarse_points == PRIOR else f"g{coarse_points}_r{rtol:g}"


def check_precision(coarse_points: int | str, value: float) -> None:
    """(coarse_points >= 1, 0 < rtol < 1), or ("prior", M) with M queries per pair in 1..12."""
    if coarse_points == PRIOR:
        if int(value) != value or not 1 <= value <= MAX_PRIOR_STEPS:
            raise InvalidValueError(f"a prior-guided precision is ('prior', M) with M in 1..{MAX_PRIOR_STEPS}, got {value}")
    elif isinstance(coarse_points, str) or int(coarse_points) != coarse_points or coarse_points < 1 or not 0 < value < 1:
        raise InvalidValueError(f"a precision is (coarse_points >= 1, 0 < rtol < 1) or ('prior', M), "
                                f"got ({coarse_points}, {value})")


def run_study(out: str | Path, dataset: str, arch: str, settings: StudySettings, *,
              families: tuple[str, ...] = STUDY_FAMILIES, precisions: tuple[tuple[int, float], ...] = STUDY_PRECISIONS,
              model_from: str | Path | None = None, evaluator_from: str | Path | None = None,
              device: str | None = None, data_root=None, download: bool = False, progress: bool = False,
              executor: Executor | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or resume) the study for one dataset and architecture; returns the cell dicts.

    executor: computes the fingerprint chunks and then the cells (default: here, in order). Every
    fingerprint file exists before the first cell runs; each cell is independent and seeded.

    model_from / evaluator_from: copy an existing checkpoint instead of training one (it must be
    of ``arch`` on ``dataset``); the copy keeps its hash, which every cell records.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise InvalidValueError(f"unknown direction family '{unknown[0]}' (choose from {', '.join(FAMILIES)})")
    for g, r in precisions:
        check_precision(g, r)
    common = {"data_root": data_root, "download": download}
    store, once, model_dir, evaluator, target_hash = open_study(
        out, "study", dataset, arch, settings, model_from=model_from, evaluator_from=evaluator_from, device=device,
        progress=progress, log=log, **common)
    out = store.root

    train = load_dataset(dataset, "train", data_root, download)
    test = load_dataset(dataset, "test", data_root, download)
    train_x = train.images[:settings.n_train]
    test_x, test_y = test.images[:settings.n_test], test.labels[:settings.n_test]
    plans = []  # (family, folder, directions, fingerprints by split, coarse points, rtol, count), cell by cell
    for family, name, build_count, cell_counts in _direction_sets(families, settings.counts):
        fam_dir = ensure_writable_dir(out / name)
        dir_file = fam_dir / "directions.safetensors"
        learn = {"learn_epochs": settings.learn_epochs, "learn_balance": settings.learn_balance,
                 "learn_images": settings.learn_images, "eps_max": settings.eps_max} if family == "learned" else {}
        once(f"{name}-directions", lambda: directions_job(
            family, build_count, dir_file, dataset=dataset, seed=settings.seed, model_dir=model_dir,
            mix=settings.mix if family == "mix" else None, device=device, progress=progress, **learn, **common))
        directions = Directions.load(dir_file)
        own = directions.point_search()  # query points are asked at their own knots, at no other precision
        for g, rtol in precisions if own is None else ((PRIOR, own.steps),):
            tag = _tag(g, rtol)
            search: dict[str, Any] = {"rtol": rtol, "coarse_points": g}
            if own is not None:
                search = {}
            elif g == PRIOR:  # the owner's own prior: its first PRIOR_ROWS training images, the paper's precision
                prior_file = fam_dir / "fp_prior.safetensors"
                once(f"{name}-prior-fingerprints", lambda: fingerprint_job(
                    model_dir, dir_file, dataset, "train", prior_file, indices=f"0:{min(PRIOR_ROWS, len(train))}",
                    eps_max=settings.eps_max, rtol=RTOL, coarse_points=COARSE_POINTS, device=device,
                    executor=executor, progress=progress, **common))
                search = {"prior": prior_file, "prior_steps": int(rtol)}
            fps = {}
            for split, n in (("train", settings.n_train), ("test", settings.n_test)):
                fp_file = fam_dir / f"fp_{split}_{tag}.safetensors"
                once(f"{name}-{tag}-fingerprints-{split}", lambda: fingerprint_job(
                    model_dir, dir_file, dataset, split, fp_file, indices=f"0:{n}", eps_max=settings.eps_max,
                    device=device, executor=executor, progress=progress, **search, **common))
                fps[split] = Fingerprints.load(fp_file)
            plans += [(family, name, directions, fps, g, rtol, count) for count in cell_counts]

    def cell(i: int) -> StepResult:
        """Cell ``i``: a decoder on the first ``count`` directions, scored on the victims; its record
        and sample reconstructions (written by the caller, so the cell can run on a worker)."""
        family, folder, directions, fps, g, rtol, count = plans[i]
        t0 = time.perf_counter()
        prefix = directions.first(count)
        fp_train, fp_test = (fps[s].first_directions(prefix) for s in ("train", "test"))
        feats = FingerprintFeatures.fit(fp_train.eps, fp_train.censored, settings.eps_max, kind=settings.decoder_features)
        net, rep = train_decoder(feats.transform(fp_train.eps, fp_train.censored), train_x,
                                 ngf=settings.decoder_ngf, epochs=settings.decoder_epochs,
                                 patience=settings.decoder_patience, seed=settings.seed, loss=settings.decoder_loss,
                                 mlp=settings.decoder_mlp, res=settings.decoder_res,
                                 device=resolve_device(device), progress=False)  # resolved where the cell runs
        decoder = FingerprintDecoder(net.cpu(), feats, dict(fp_train.meta))
        recon = decoder.reconstruct(fp_test)
        report = reconstruction_report(recon, test_x, test_y, train.images, train.labels, evaluator.model)
        record = {
            "dataset": dataset, "arch": arch, "family": family, "count": count,
            "coarse_points": g, "rtol": rtol, "search": fp_test.meta["search"].get("kind", "bisection"),
            "search_params": fp_test.meta["search"], "mix": settings.mix if family == "mix" else None,
            "n_train": settings.n_train, "n_test": settings.n_test,
            "psnr": report["attack"]["psnr_mean"], "psnr_std": report["attack"]["psnr_std"],
            "ssim": report["attack"]["ssim_mean"], "ssim_std": report["attack"]["ssim_std"],
            "ssim_full_map": report["attack"]["ssim_full_map_mean"],
            "class_recovery": report["attack"]["class_recovery"],
            "queries_per_fingerprint": float(fp_test.queries.sum(1).double().mean()),
            "queries_per_direction": float(fp_test.queries.double().mean()),
            "censored_fraction": float(fp_test.censored.float().mean()),
            "decoder": {"ngf": settings.decoder_ngf, "epochs": settings.decoder_epochs, "loss": settings.decoder_loss,
                        "features": settings.decoder_features, "mlp": settings.decoder_mlp,
                        **({"res": settings.decoder_res} if settings.decoder_res else {}), "epochs_run": rep.epochs_run,
                        "best_epoch": rep.best_epoch, "best_val_mse": rep.best_val_mse},
            "baselines": {k: report[k] for k in ("baseline_mean_image", "baseline_class_mean")},
            "hashes": {"model": target_hash, "evaluator": evaluator.hash, "directions": prefix.hash,
                       "directions_full": directions.hash, "train_split": train.split_hash,
                       "test_split": test.split_hash},
            "directions_build_seconds": directions.params.get("build_seconds"),
            # The learned family's training: how long, on how many of the owner's images.
            **({"learn": {"epochs": settings.learn_epochs, "balance": settings.learn_balance,
                          "images": directions.params.get("learn_images")}} if family == "learned" else {}),
            "cell_seconds": round(time.perf_counter() - t0, 1), "ran_on": describe_device(device),
            "seed": settings.seed, "hesig_version": __version__,
        }
        # A few reconstructions for figures (the decoder itself is not kept).
        sample = ({"reconstructions": recon[:SAMPLE_FIGURE], "indices": fp_test.indices[:SAMPLE_FIGURE]},
                  {"family": family, "count": count, "directions_hash": prefix.hash})
        return record, {f"{folder}/recon_{_tag(g, rtol)}_k{count}.safetensors": sample}

    def saved(i: int, record: dict[str, Any]) -> None:
        log(f"[cell] {dataset} {arch} {record['family']} {_tag(record['coarse_points'], record['rtol'])} "
            f"k={record['count']}: PSNR {record['psnr']:.2f} SSIM {record['ssim']:.3f} "
            f"class {record['class_recovery']:.3f} q/fp {record['queries_per_fingerprint']:.0f}")

    names = [f"{CELL_PREFIX}{family}_{_tag(g, rtol)}_k{count}" for family, _, _, _, g, rtol, count in plans]
    return store.compute_steps(names, cell, executor=executor, on_saved=saved)


def _direction_sets(families: tuple[str, ...], counts: tuple[int, ...]) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """(family, folder, directions to build, counts read off them) for each set the study builds:
    one of max(counts) per prefix-consistent family, one per count for a family without the
    prefix property (``learned``, in ``<family>-k<count>``)."""
    sets = []
    for family in families:
        if FAMILY_REGISTRY[family].nested:
            sets.append((family, family, counts[-1], counts))
        else:
            sets += [(family, f"{family}-k{count}", count, (count,)) for count in counts]
    return sets


def timed_steps(store: RunStore, log: Callable[[str], None]) -> Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]:
    """``once(name, make)``: a run-store step that logs its name and duration the first time it runs."""
    def once(name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        def timed() -> dict[str, Any]:
            t0 = time.perf_counter()
            log(f"[{name}] ...")
            record = make()
            log(f"[{name}] done in {time.perf_counter() - t0:.1f} s")
            return record
        return store.step(name, timed)[0]
    return once


def open_study(out: str | Path, kind: str, dataset: str, arch: str, settings, *, model_from=None, evaluator_from=None,
               device: str | None = None, progress: bool = False, data_root=None, download: bool = False,
               log: Callable[[str], None] = print):
    """A study folder: its run store (``kind``, pinned to dataset, arch and ``settings.key()``), its
    timed ``once`` (:func:`timed_steps`) and its models (:func:`study_models`).
    Returns (store, once, target model folder, loaded evaluator, target hash)."""
    store = RunStore(out, kind, {"dataset": dataset, "arch": arch, **settings.key()})
    once = timed_steps(store, log)
    model_dir, evaluator, target_hash = study_models(once, store.root, dataset, arch, settings.seed,
                                                     model_from=model_from, evaluator_from=evaluator_from,
                                                     device=device, progress=progress, data_root=data_root,
                                                     download=download)
    return store, once, model_dir, evaluator, target_hash


def study_models(once, out: Path, dataset: str, arch: str, seed: int, *, model_from=None, evaluator_from=None,
                 device: str | None = None, progress: bool = False, data_root=None, download: bool = False):
    """The target model and an independent evaluator of a study folder, trained (or copied from
    ``model_from`` / ``evaluator_from``, which must be of that arch on that dataset) once.
    Returns (target model folder, loaded evaluator, target hash)."""
    def model_step(name: str, source, train_arch: str, model_seed: int) -> Path:
        path = out / name

        def copy() -> dict[str, Any]:
            loaded = load_model(source)
            if loaded.arch != train_arch or loaded.meta.get("dataset") != dataset:
                raise MismatchError(f"{source} is a {loaded.arch} on {loaded.meta.get('dataset')}, "
                                    f"not a {train_arch} on {dataset}")
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(source, path)
            return {"copied_from": str(source), "model_hash": loaded.hash}

        once(name, copy if source is not None else lambda: train_model_job(
            dataset, train_arch, path, seed=model_seed, device=device, progress=progress, data_root=data_root,
            download=download))
        return path

    model_dir = model_step("model", model_from, arch, seed)
    evaluator_arch = DEMO_SETTINGS.get(dataset, {}).get("evaluator", "lenet5")
    evaluator = load_model(model_step("evaluator", evaluator_from, evaluator_arch, seed + 1000))
    target_hash = load_model(model_dir).hash
    if evaluator.hash == target_hash:
        raise InvalidValueError("the evaluator must be trained independently of the target model")
    return model_dir, evaluator, target_hash


def collect_cells(*study_dirs: str | Path) -> list[dict[str, Any]]:
    """All cell dicts of the given study folders, sorted by dataset, arch, family, precision, count."""
    cells = [cell for d in study_dirs for cell in _records(Path(d), CELL_PREFIX)]
    return sorted(cells, key=cell_order)


def cell_order(c: dict[str, Any]) -> tuple:
    """Sort key of cells: dataset, arch, family, then the plain search by G and rtol before the prior-guided by M, count."""
    prior = c["coarse_points"] == PRIOR
    return (c["dataset"], c["arch"], c["family"], prior, 0 if prior else c["coarse_points"],
            c["rtol"] if prior else -c["rtol"], c["count"])


def _records(study_dir: Path, prefix: str) -> list[dict[str, Any]]:
    """Step records of a finished (or partial) study folder, read without pinning a configuration."""
    return [json.loads(p.read_text()) for p in sorted((study_dir / "steps").glob(f"{prefix}*.json"))]


def pareto_front(cells: list[dict[str, Any]], metric: str = "ssim") -> list[dict[str, Any]]:
    """The best allocation at each budget: cells no other cell beats with fewer or equal queries.

    Sorted by queries per fingerprint; each returned cell has a strictly higher ``metric`` than
    every cheaper one, so "the best reconstruction for at most B queries" is the last entry with
    queries <= B.
    """
    front, best = [], -float("inf")
    for cell in sorted(cells, key=lambda c: (c["queries_per_fingerprint"], -c[metric])):
        if cell[metric] > best:
            front.append(cell)
            best = cell[metric]
    return front


def family_reconstructions(study_dir: str | Path, cells: list[dict[str, Any]], path: str | Path, count: int = 100,
                           data_root=None, download: bool = False) -> Path | None:
    """Figure: the first test victims and each family's reconstructions of them at ``count``
    directions (the paper's precision), from the samples every cell keeps. None if any is missing."""
    study_dir = Path(study_dir)
    by = {c["family"]: c for c in cells if (c["coarse_points"], c["rtol"]) == DEFAULT_PRECISION and c["count"] == count}
    families = sorted(by, key=viz.family_sort_key)
    tag = _tag(*DEFAULT_PRECISION)
    files = [study_dir / f / f"recon_{tag}_k{count}.safetensors" for f in families]
    if not families or not all(f.exists() for f in files):
        return None
    recons = [load_tensors(f)[0] for f in files]
    idx = recons[0]["indices"]
    first = by[families[0]]
    test = load_dataset(first["dataset"], "test", data_root, download)
    # Three decimals and the difference to the class-mean baseline: families often differ in the third.
    base = first["baselines"]["baseline_class_mean"]["ssim_mean"]
    labels = ["original"] + [f"{f}\nSSIM {by[f]['ssim']:.3f} ({by[f]['ssim'] - base:+.3f} vs class mean)"
                             for f in families]
    return viz.reconstruction_grid([test.images[idx]] + [r["reconstructions"] for r in recons], labels, path,
                                   f"{first['arch']} on {first['dataset']}: first {len(idx)} test victims, "
                                   f"{count} directions per family (mean SSIM over {first['n_test']})",
                                   col_labels=[str(int(test.labels[i])) for i in idx])
