"""Jobs behind ``hesig attack vicious``, ``hesig detect-vicious`` and ``hesig output-defenses``.

A vicious run directory holds::

    run.json            the pinned settings (:class:`~hesig.jobs.runstore.RunStore`); steps/ its finished steps
    model/              F as an ordinary hesig checkpoint (arch bn_cnn), meta: beta, release, dataset ...
    decoder.safetensors G's weights; metadata pins F's model hash and the release mode
    metrics.json        test accuracy, PSNR (per image and dataset-level), SSIM (hesig's and the
                        interior-only convention), R (eq. 6), training time, hashes, settings
    history.json        per-epoch training and validation losses
    reconstructions.png the first ten test images and their reconstructions

Runs resume through the run store in two steps: ``train`` (F, G and history.json written) and
``evaluate`` (metrics.json and the figure); a finished step is never redone, and a directory pinned
to other settings is refused with one line. Every file is written atomically.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import __version__
from ..attacks.base import LabelledData
from ..attacks.vicious.classifier import RELEASES, ViciousAttack, ViciousModel, resize_images
from ..attacks.vicious.detection import HONEST_THRESHOLD, vicious_likelihood
from ..data import Dataset, load_dataset
from ..models.dcgan import DCGANDecoder
from ..core.defaults import RISK_REGULARISATIONS, VICIOUS_IMAGE_SIZE, VICIOUS_LOSS, VICIOUS_NGF, VICIOUS_TRAINING
from ..core.errors import CheckpointError, InvalidValueError, OutputError
from ..core.outputs import refuse_inside_inputs
from ..core.io import atomic_write_json, ensure_writable_dir, load_tensors, save_tensors, state_dict_hash
from ..evaluation.metrics import dataset_psnr, summarize
from ..models import load_model, save_model
from ..defenses.output import parse_output_defense
from ..evaluation.risk import ReconstructionRisk
from ..core.runtime import describe_device, resolve_device
from ..models.training import train_epochs
from .runstore import RunStore

DECODER_FILE = "decoder.safetensors"
METRICS_FILE = "metrics.json"
#: Their E.1 resizes every dataset to 32 x 32.
PAPER_IMAGE_SIZE = VICIOUS_IMAGE_SIZE


def check_data_options(image_size: int, train_limit: int | None) -> None:
    """Refuse an image size bn_cnn cannot pool or a training limit below 10 (before anything is written)."""
    if int(image_size) < 8 or int(image_size) % 8:
        raise InvalidValueError(f"image size must be a multiple of 8 (bn_cnn pools three times), got {image_size}")
    if train_limit is not None and int(train_limit) < 10:
        raise InvalidValueError(f"train limit must be >= 10, got {train_limit}")


def vicious_data(dataset: str, image_size: int, data_root=None, download: bool = False,
                 train_limit: int | None = None) -> tuple[Dataset, Dataset, torch.Tensor, torch.Tensor]:
    """(train, test, train images resized, test images resized); ``train_limit`` keeps the first N training images."""
    check_data_options(image_size, train_limit)
    train = load_dataset(dataset, "train", data_root=data_root, download=download)
    test = load_dataset(dataset, "test", data_root=data_root, download=download)
    if train_limit is not None:
        train = train.subset(slice(0, int(train_limit)))
    return train, test, resize_images(train.images, image_size), resize_images(test.images, image_size)


def reconstruction_quality(recon: torch.Tensor, target: torch.Tensor, risk: ReconstructionRisk | None) -> dict[str, float]:
    """PSNR (per image and dataset-level), SSIM (interior, and full map beside it) and R of ``recon`` [n, C, H, W]."""
    result: dict[str, float] = {k: v for k, v in summarize(recon, target).items() if k != "n"}
    result["psnr_dataset"] = dataset_psnr(recon, target)
    if risk is not None:
        r = risk.per_image(recon, target)
        result.update({"risk_R": float(r.mean()), "risk_R_std": float(r.std())})
    return result


def evaluate(model: ViciousModel, images: torch.Tensor, labels: torch.Tensor, risk: ReconstructionRisk | None) -> dict[str, Any]:
    """Accuracy of F and, when there is a G, reconstruction quality of G(released) on ``images``."""
    released = model.outputs(images)
    result: dict[str, Any] = {"n": int(len(images)), "accuracy": float((released.argmax(1) == labels).double().mean())}
    if model.decoder is not None:
        result.update(reconstruction_quality(model.reconstruct(released), images, risk))
    return result


def fitted_risk(train: Dataset, images: torch.Tensor, regularisation: str) -> ReconstructionRisk:
    """R's statistics for a training split, cached per (split hash, image size, regularisation).

    The fit (a 1,024 x 1,024 float64 covariance of 60,000 images and its pseudo-inverse) costs
    ~15 s of CPU per run; the cache holds mean and precision in safetensors under the per-user
    cache directory, keyed so that another split or size never reuses it.
    """
    from ..data import _user_cache
    key = f"risk_{train.name}_{train.split_hash}_{'x'.join(map(str, images.shape[1:]))}_{regularisation}"
    path = _user_cache() / "risk" / f"{key}.safetensors"
    if path.is_file():
        try:
            tensors, meta = load_tensors(path, what="risk cache")
            if meta.get("key") == key:
                return ReconstructionRisk(tensors["mean"], tensors["precision"], meta["regularisation"], float(meta["strength"]))
        except (CheckpointError, KeyError):
            pass  # a damaged cache entry is refitted and overwritten below
    risk = ReconstructionRisk.fit(images, regularisation)
    try:
        save_tensors(path, {"mean": risk.mean, "precision": risk.precision},
                     {"key": key, "regularisation": risk.regularisation, "strength": risk.strength})
    except OutputError:
        pass  # an unwritable cache only costs time
    return risk


def _save_decoder(decoder: DCGANDecoder, path: Path, meta: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu() for k, v in decoder.state_dict().items()}
    save_tensors(path, tensors, {**meta, "decoder_hash": state_dict_hash(tensors), "in_features": decoder.in_features,
                                 "out_shape": list(decoder.out_shape), "ngf": decoder.ngf})


def load_vicious(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[ViciousModel, dict[str, Any]]:
    """A run directory -> (ViciousModel, F's metadata). Refuses a decoder trained against another F."""
    run_dir = Path(run_dir)
    loaded = load_model(run_dir / "model", device=device)
    meta = loaded.meta
    if "release" not in meta or meta.get("release") not in RELEASES:
        raise CheckpointError(f"{run_dir / 'model'} is not a vicious-classifier checkpoint (no release mode in its metadata)")
    decoder = None
    if float(meta.get("beta_r", 0)) > 0:
        tensors, dmeta = load_tensors(run_dir / DECODER_FILE, what="decoder checkpoint")
        if dmeta.get("model_hash") != loaded.hash:
            raise CheckpointError(f"{run_dir / DECODER_FILE} was trained against model {dmeta.get('model_hash')}, "
                                  f"not {loaded.hash}")
        if state_dict_hash(tensors) != dmeta.get("decoder_hash"):
            raise CheckpointError(f"{run_dir / DECODER_FILE} is corrupt: its weights do not match the recorded hash")
        try:
            decoder = DCGANDecoder(int(dmeta["in_features"]), tuple(dmeta["out_shape"]), int(dmeta["ngf"]))
            decoder.load_state_dict(tensors, strict=True)
        except (KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{run_dir / DECODER_FILE} does not fit its recorded shape ({type(exc).__name__})") from None
        decoder = decoder.to(device).eval()
    return ViciousModel(loaded.model, decoder, meta["release"]), meta


def train_vicious_job(dataset: str, beta: str, release: str, out: str | Path, *,
                      epochs: int = VICIOUS_TRAINING["epochs"], seed: int = 0,
                      batch_size: int = VICIOUS_TRAINING["batch_size"], lr: float = VICIOUS_TRAINING["lr"],
                      ngf: int = VICIOUS_NGF, image_size: int = PAPER_IMAGE_SIZE,
                      ssim_weight: float = VICIOUS_LOSS["ssim_weight"], huber_weight: float = VICIOUS_LOSS["huber_weight"],
                      huber_delta: float = VICIOUS_LOSS["huber_delta"],
                      valid_fraction: float = VICIOUS_TRAINING["valid_fraction"], train_limit: int | None = None,
                      risk_regularisation: str = RISK_REGULARISATIONS[0],
                      data_root=None, download: bool = False, device: str | None = "auto", progress: bool = True) -> dict[str, Any]:
    """Train one (F, G) pair with Algorithm 1 and evaluate it on the whole test split -> metrics dict
    (with ``resumed``: whether the run directory already held it)."""
    attack = ViciousAttack(beta, release, epochs=epochs, batch_size=batch_size, lr=lr, valid_fraction=valid_fraction,
                           ngf=ngf, ssim_weight=ssim_weight, huber_weight=huber_weight, huber_delta=huber_delta,
                           seed=seed, device=resolve_device(device), progress=progress)
    check_data_options(image_size, train_limit)
    if risk_regularisation not in RISK_REGULARISATIONS:
        raise InvalidValueError(f"unknown risk regularisation '{risk_regularisation}' "
                                f"(choose from {', '.join(RISK_REGULARISATIONS)})")
    settings = {**attack.settings(), "dataset": dataset, "image_size": int(image_size), "train_limit": train_limit,
                "risk_regularisation": risk_regularisation}
    store = RunStore(out, "vicious", settings)
    out = store.root
    data = functools.cache(lambda: vicious_data(dataset, image_size, data_root, download, train_limit))

    def train() -> dict[str, Any]:
        train_set, test, x_train, _ = data()
        model = attack.fit(LabelledData(x_train, train_set.labels, train_set.num_classes)).model
        meta = {"arch": "bn_cnn", "in_shape": list(x_train.shape[1:]), "num_classes": train_set.num_classes,
                "dataset": dataset, "beta": attack.beta, "beta_r": attack.beta_r, "beta_c": attack.beta_c,
                "release": release, "seed": seed, "image_size": int(image_size),
                "train_split_hash": train_set.split_hash, "test_split_hash": test.split_hash}
        save_model(model.classifier.cpu(), out / "model", meta)
        model_hash = state_dict_hash(model.classifier.state_dict())  # what save_model recorded
        if model.decoder is not None:
            _save_decoder(model.decoder.cpu(), out / DECODER_FILE, {"model_hash": model_hash, "release": release,
                                                                     "hesig_version": __version__})
        atomic_write_json(out / "history.json", model.history)
        return {"best_epoch": model.best_epoch, "train_seconds": model.train_seconds, "model_hash": model_hash}

    def evaluate_run() -> dict[str, Any]:
        train_set, test, x_train, x_test = data()
        model, _ = load_vicious(out, attack.device)
        t0 = time.perf_counter()
        risk = fitted_risk(train_set, x_train, risk_regularisation) if model.decoder is not None else None
        metrics = evaluate(model, x_test, test.labels, risk)
        eval_seconds = time.perf_counter() - t0
        if model.decoder is not None:
            from ..evaluation.viz import reconstruction_grid
            first = x_test[:10]
            reconstruction_grid([first, model.reconstruct(model.outputs(first))], ["original", f"G({release})"],
                                out / "reconstructions.png", f"{dataset}, beta^R/beta^C = {attack.beta}, {release} released")
        result = {"settings": settings, "test": metrics, "best_epoch": trained["best_epoch"],
                  "train_seconds": trained["train_seconds"], "eval_seconds": eval_seconds, "queries": int(len(x_test)),
                  "queries_note": "one inference per test image; the server sees only its released vector",
                  "risk": risk.describe() if risk is not None else None, "model_hash": trained["model_hash"],
                  "train_split_hash": train_set.split_hash, "test_split_hash": test.split_hash,
                  "device": str(attack.device), "ran_on": describe_device(attack.device),
                  "torch_threads": torch.get_num_threads(), "hesig_version": __version__}
        atomic_write_json(out / METRICS_FILE, result)
        return result

    trained, _ = store.step("train", train)
    result, reused = store.step("evaluate", evaluate_run)
    return {**result, "resumed": reused}


# --------------------------------------------------------------------------------------------
# detection


def detect_vicious_job(run_dirs: Sequence[str | Path], out: str | Path, *, finetune_size: int = 250, probe_size: int = 1000,
                       rounds: int = 10, lr: float = 1e-3, draws: int = 3, seed: int = 0, data_root=None,
                       download: bool = False, device: str | None = "auto", progress: bool = True) -> dict[str, Any]:
    """Eq. (19)-(20) for every run, several fine-tuning draws each; ROC/AUC when honest and vicious runs are both given.

    Data: the probe set is the first ``probe_size`` test images; each draw's D^test+ is ``finetune_size``
    labelled images drawn (seeded) from the rest of the test split -- never from the training split.
    """
    from sklearn.metrics import roc_auc_score, roc_curve
    if not run_dirs:
        raise InvalidValueError("give at least one vicious run directory")
    for name, value in (("finetune_size", finetune_size), ("probe_size", probe_size), ("draws", draws)):
        if int(value) < 1:
            raise InvalidValueError(f"{name} must be >= 1, got {value}")
    refuse_inside_inputs(out, run_dirs)
    out = ensure_writable_dir(out)
    dev = resolve_device(device)
    cache: dict[tuple, tuple[Dataset, torch.Tensor]] = {}
    rows = []
    for run_dir in run_dirs:
        model, meta = load_vicious(run_dir, device=dev)
        key = (meta["dataset"], int(meta["image_size"]))
        if key not in cache:
            test = load_dataset(meta["dataset"], "test", data_root=data_root, download=download)
            cache[key] = (test, resize_images(test.images, key[1]))
        test, x_test = cache[key]
        if test.split_hash != meta.get("test_split_hash"):
            raise CheckpointError(f"{run_dir}: the test split differs from the one this model was evaluated on")
        if probe_size + finetune_size > len(x_test):
            raise InvalidValueError(f"probe_size + finetune_size = {probe_size + finetune_size} exceeds the {len(x_test)} test images")
        probe = x_test[:probe_size]
        pool = torch.arange(probe_size, len(x_test))
        for draw in range(int(draws)):
            gen = torch.Generator().manual_seed(int(seed) * 1000 + draw)
            pick = pool[torch.randperm(len(pool), generator=gen)[:finetune_size]]
            res = vicious_likelihood(model.classifier, x_test[pick], test.labels[pick], probe, rounds=rounds, lr=lr,
                                     seed=int(seed) * 1000 + draw)
            rows.append({"run": str(run_dir), "dataset": meta["dataset"], "beta": meta["beta"], "release": meta["release"],
                         "seed": meta["seed"], "model_hash": meta["model_hash"], "draw": draw,
                         "vicious": float(meta["beta_r"]) > 0, **res})
    summary: dict[str, Any] = {"rows": rows, "threshold_v": HONEST_THRESHOLD, "settings": {
        "finetune_size": finetune_size, "probe_size": probe_size, "rounds": rounds, "lr": lr, "draws": draws, "seed": seed},
        "hesig_version": __version__}
    groups = {"all": rows, **{d: [r for r in rows if r["dataset"] == d] for d in sorted({r["dataset"] for r in rows})}}
    summary["roc"] = {}
    for name, group in groups.items():
        truth = [int(r["vicious"]) for r in group]
        if 0 < sum(truth) < len(truth):
            scores = [r["v"] for r in group]
            fpr, tpr, thr = roc_curve(truth, scores)
            flagged = [r["v"] > HONEST_THRESHOLD for r in group]
            summary["roc"][name] = {
                "auc": float(roc_auc_score(truth, scores)), "fpr": fpr.tolist(), "tpr": tpr.tolist(),
                "thresholds": [float(t) if math.isfinite(t) else None for t in thr],
                "n_honest": len(truth) - sum(truth), "n_vicious": sum(truth),
                "paper_threshold_tpr": sum(f and t for f, t in zip(flagged, truth)) / sum(truth),
                "paper_threshold_fpr": sum(f and not t for f, t in zip(flagged, truth)) / (len(truth) - sum(truth))}
    atomic_write_json(out / "detection.json", summary)
    _detection_figure(summary, out / "detection.png")
    return {"runs": len(run_dirs), "rows": len(rows), "auc": {k: v["auc"] for k, v in summary["roc"].items()},
            "out": str(out / "detection.json")}


def _detection_figure(summary: dict[str, Any], path: Path) -> None:
    from ..evaluation.viz import new_figure, save_figure
    fig = new_figure(11, 4.2)
    ax_roc, ax_curve = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, roc in summary["roc"].items():
        ax_roc.plot(roc["fpr"], roc["tpr"], label=f"{name} (AUC {roc['auc']:.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax_roc.set(xlabel="false-positive rate (honest flagged)", ylabel="true-positive rate (vicious flagged)",
               title="ROC of the vicious-likelihood v (eq. 20)")
    ax_roc.legend(fontsize=8)
    by_kind: dict[str, list[list[float]]] = {}
    for r in summary["rows"]:
        by_kind.setdefault(f"{r['dataset']} {r['beta']} {r['release']}", []).append(r["cosine_by_round"])
    for label, curves in sorted(by_kind.items()):
        mean = torch.tensor(curves).mean(0)
        ax_curve.plot(range(1, len(mean) + 1), mean.numpy(), label=label, lw=1.2,
                      ls="-" if label.split()[1].startswith("0/") else "--")
    ax_curve.set(xlabel="fine-tuning round", ylabel="cosine similarity C (eq. 19)", title="F vs F+ on the probe set")
    ax_curve.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# output defenses


def _adapt_decoder(model: ViciousModel, released_fn, x_train: torch.Tensor, epochs: int, batch_size: int, lr: float,
                   seed: int, loss_fn) -> DCGANDecoder:
    """The adaptive server: fine-tune a copy of G on defended outputs of its own training images (F frozen)."""
    decoder = copy.deepcopy(model.decoder)
    device = next(decoder.parameters()).device
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    released = None

    def redraw(epoch: int) -> None:
        nonlocal released
        released = released_fn(seed * 100 + epoch - 1)  # fresh noise every epoch for the noise defense

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(decoder(released[idx].to(device)), x_train[idx].to(device))

    for _ in train_epochs([opt], loss_of_batch, len(x_train), batch_size=batch_size, epochs=epochs,
                          generator=torch.Generator().manual_seed(seed), modules=[decoder], drop_last=True,
                          before_epoch=redraw, desc="adapt G"):
        pass
    return decoder.eval()


def output_defenses_job(run_dir: str | Path, out: str | Path, defenses: Sequence[str], *, adapt_epochs: int = 2,
                        test_limit: int | None = None, batch_size: int = 250, lr: float = 1e-3, seed: int = 0,
                        data_root=None, download: bool = False, device: str | None = "auto",
                        progress: bool = True) -> dict[str, Any]:
    """Task accuracy and reconstruction quality under each output defense -> defenses.json + figure.

    Two servers per defense: the *fixed* one reuses G as trained (the paper's setting), the
    *adaptive* one fine-tunes G for ``adapt_epochs`` on defended outputs of the server's own
    training images (F untouched; the server knows the mechanism, not the noise draws).
    """
    from tqdm.auto import tqdm
    from ..attacks.vicious.classifier import ReconstructionLoss
    parsed = [parse_output_defense(d) for d in defenses]
    if not parsed:
        raise InvalidValueError("give at least one output defense")
    if int(adapt_epochs) < 0:
        raise InvalidValueError(f"adapt_epochs must be >= 0, got {adapt_epochs}")
    dev = resolve_device(device)
    model, meta = load_vicious(run_dir, device=dev)
    if model.decoder is None:
        raise InvalidValueError(f"{run_dir} is an honest model (beta^R = 0): there is no reconstruction to defend against")
    refuse_inside_inputs(out, (run_dir,))
    out = ensure_writable_dir(out)
    train, test, x_train, x_test = vicious_data(meta["dataset"], int(meta["image_size"]), data_root, download)
    if test.split_hash != meta.get("test_split_hash") or train.split_hash != meta.get("train_split_hash"):
        raise CheckpointError(f"{run_dir}: the dataset splits differ from those this model was trained on")
    labels = test.labels
    if test_limit is not None:
        x_test, labels = x_test[:int(test_limit)], labels[:int(test_limit)]
    risk = fitted_risk(train, x_train, "pinv")
    clean_test, clean_train = model.outputs(x_test), model.outputs(x_train)
    loss_fn = ReconstructionLoss()
    rows = []
    for i, defense in enumerate(tqdm(parsed, desc="output defenses", disable=not progress, leave=False)):
        t0 = time.perf_counter()
        released = defense.apply(clean_test, seed=seed + 7919 * (i + 1))
        row: dict[str, Any] = {"defense": defense.spec, "kind": defense.kind, "value": defense.value,
                               "accuracy": float((released.argmax(1) == labels).double().mean())}
        row["fixed"] = reconstruction_quality(model.reconstruct(released), x_test, risk)
        if adapt_epochs:  # also for "none": the extra epochs alone, so the defended rows compare like with like
            decoder = _adapt_decoder(model, lambda s: defense.apply(clean_train, seed=s), x_train, int(adapt_epochs),
                                     batch_size, lr, seed, loss_fn)
            adapted = ViciousModel(model.classifier, decoder, model.release)
            row["adaptive"] = reconstruction_quality(adapted.reconstruct(released), x_test, risk)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    summary = {"run": str(run_dir), "model_hash": meta["model_hash"], "dataset": meta["dataset"], "beta": meta["beta"],
               "release": meta["release"], "n_test": int(len(x_test)), "adapt_epochs": int(adapt_epochs), "seed": seed,
               "rows": rows, "hesig_version": __version__}
    atomic_write_json(out / "defenses.json", summary)
    _defense_figure(summary, out / "defenses.png")
    return {"defenses": len(rows), "out": str(out / "defenses.json"),
            "table": {r["defense"]: (round(r["accuracy"], 4), round(r["fixed"]["ssim_mean"], 3),
                                     round(r.get("adaptive", r["fixed"])["ssim_mean"], 3)) for r in rows}}


def _defense_figure(summary: dict[str, Any], path: Path) -> None:
    from ..evaluation.viz import new_figure, save_figure
    fig = new_figure(11, 4.2)
    axes = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    kinds = [k for k in ("round", "noise", "topk") if any(r["kind"] == k for r in summary["rows"])]
    markers = {"round": "o", "noise": "s", "topk": "^"}
    for ax, metric, label in zip(axes, ("ssim_mean", "psnr_mean"), ("SSIM (data range 1)", "PSNR (dB, per-image mean)")):
        for kind in kinds:
            rows = sorted((r for r in summary["rows"] if r["kind"] == kind), key=lambda r: r["accuracy"])
            for server, ls in (("fixed", "--"), ("adaptive", "-")):
                pts = [(r["accuracy"] * 100, r[server][metric]) for r in rows if server in r]
                if pts:
                    ax.plot(*zip(*pts), ls=ls, marker=markers[kind], label=f"{kind}, {server} G")
        for r in summary["rows"]:
            if r["kind"] in ("none", "argmax"):
                for server in ("fixed", "adaptive"):
                    if server in r:
                        ax.scatter(r["accuracy"] * 100, r[server][metric], marker="*" if r["kind"] == "none" else "x",
                                   s=70, color="black" if server == "fixed" else "red", zorder=3,
                                   label=f"{r['kind']}, {server} G")
        ax.set(xlabel="task accuracy (%)", ylabel=label,
               title=f"{summary['dataset']} {summary['beta']} {summary['release']}: defense vs leakage")
        ax.legend(fontsize=6)
    save_figure(fig, path)


__all__ = ["train_vicious_job", "detect_vicious_job", "output_defenses_job", "load_vicious", "evaluate", "reconstruction_quality", "vicious_data"]
