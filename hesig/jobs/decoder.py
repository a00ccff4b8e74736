"""Jobs ``hesig train-decoder`` and ``hesig reconstruct``: the decoder that turns fingerprints back
into images, and its scoring beside both baselines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.defaults import DECODER_LOSSES, DECODER_TRAINING, NGF
from ..core.errors import CheckpointError, InvalidValueError, MismatchError
from ..core.io import atomic_write_json, ensure_writable_dir, save_tensors, tensors_checksum
from ..core.outputs import guard_output, identity
from ..core.runtime import resolve_device
from ..data import load_dataset
from ..evaluation import viz
from ..evaluation.metrics import class_mean_baseline, reconstruction_report
from ..models import load_model
from ..signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
from ..signature.fingerprints import Fingerprints


def _json_field(path: Path, key: str) -> Any:
    """A field of a JSON file beside a checkpoint (timings live there), or None."""
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def images_for(fp: Fingerprints, data_root, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The secret images and labels behind ``fp`` (for training targets and evaluation only)."""
    data = load_dataset(fp.meta["dataset"], fp.meta["split"], data_root, download)
    if fp.meta.get("split_hash") != data.split_hash:
        raise MismatchError(f"fingerprints were made from another copy of {data.name}/{data.split} (split hash differs)")
    if len(fp) and int(fp.indices.max()) >= len(data):
        raise CheckpointError(f"fingerprint index {int(fp.indices.max())} lies past the end of {data.name}/{data.split} "
                              f"({len(data)} images)")
    return data.images[fp.indices], data.labels[fp.indices]


def train_decoder_job(fingerprints_file: str | Path, out: str | Path, *, epochs: int = DECODER_TRAINING["epochs"],
                      batch_size: int = DECODER_TRAINING["batch_size"], lr: float = DECODER_TRAINING["lr"],
                      ngf: int = NGF, patience: int = DECODER_TRAINING["patience"],
                      val_fraction: float = DECODER_TRAINING["val_fraction"], seed: int = 0,
                      device: str | None = None, data_root=None, download: bool = False, force: bool = False,
                      progress: bool = True, loss: str = "mse", features: str = "log", mlp: int = 0,
                      res: int = 0) -> dict[str, Any]:
    """Train the decoder on (E_x, x) pairs; the same seed gives a byte-identical ``decoder.safetensors`` on the CPU.

    loss: "mse" (the paper's L2) or "ssim-l1" (:func:`hesig.signature.decoders.train_decoder`);
    features: the encoding of ε, "log" or "rank" (:mod:`hesig.signature.decoders.features`);
    mlp: fully connected hidden layers before the decoder's projection; res: residual blocks at full
    resolution before its output convolution (0 and 0: the paper's generator)."""
    if loss not in DECODER_LOSSES:
        raise InvalidValueError(f"decoder loss must be one of {', '.join(DECODER_LOSSES)}, got {loss!r}")
    fp = Fingerprints.load(fingerprints_file)
    job = {"fingerprints": tensors_checksum(fp.tensors()), "epochs": epochs, "batch_size": batch_size, "lr": lr,
           "ngf": ngf, "patience": patience, "val_fraction": val_fraction, "seed": seed}
    if loss != "mse":  # only when set: decoders trained before the options keep their identity
        job["loss"] = loss
    if features != "log":
        job["features"] = features
    if mlp:
        job["mlp"] = mlp
    if res:
        job["res"] = res
    guard_output(Path(out) / "decoder.safetensors", "decoder", job, inputs=(fingerprints_file,),
                 also_writes=[Path(out) / "decoder.json"], force=force)
    ensure_writable_dir(out)
    dev = resolve_device(device)
    images, _ = images_for(fp, data_root, download)
    feats = FingerprintFeatures.fit(fp.eps, fp.censored, fp.meta["search"]["eps_max"], kind=features)
    t0 = time.perf_counter()
    net, report = train_decoder(feats.transform(fp.eps, fp.censored), images, ngf=ngf, epochs=epochs,
                                batch_size=batch_size, lr=lr, val_fraction=val_fraction, patience=patience,
                                seed=seed, device=dev, progress=progress, loss=loss, mlp=mlp, res=res)
    seconds = time.perf_counter() - t0
    meta = {key: fp.meta.get(key) for key in ("model_hash", "directions_hash", "arch", "dataset", "split",
                                              "split_hash", "directions_family", "directions_count", "oracle")}
    meta.update({"trained_on": str(fingerprints_file), "n_train": len(fp), "seed": seed, "epochs_run": report.epochs_run,
                 "best_epoch": report.best_epoch, "best_val_mse": report.best_val_mse, "val_mse": report.val_mse,
                 "train_mse": report.train_mse, "loss": loss, "train_seconds": round(seconds, 1),
                 **identity("decoder", job)})
    FingerprintDecoder(net.cpu(), feats, meta).save(out)
    return {"out": str(out), "n_train": len(fp), "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
            "best_val_mse": round(report.best_val_mse, 5), "train_seconds": round(seconds, 1)}


def reconstruct_job(decoder_dir: str | Path, fingerprints_file: str | Path, out: str | Path, *,
                    classifier_dir: str | Path | None = None, figure_class: int | None = None,
                    figure_count: int = 12, class_figure_count: int = 10, data_root=None, download: bool = False,
                    force: bool = False) -> dict[str, Any]:
    """Decode fingerprints; write reconstructions, metrics.json (beside both baselines) and figures."""
    out = Path(out)
    decoder = FingerprintDecoder.load(decoder_dir)
    fp = Fingerprints.load(fingerprints_file)
    job = {"decoder": {k: decoder.meta.get(k) for k in ("job", "model_hash", "directions_hash", "n_train", "seed")},
           "fingerprints": tensors_checksum(fp.tensors()), "classifier": None if classifier_dir is None else
           load_model(classifier_dir).hash, "figure_class": figure_class}
    guard_output(out / "metrics.json", "reconstruction", job, inputs=(decoder_dir, fingerprints_file, classifier_dir),
                 also_writes=[out / "reconstructions.safetensors"], force=force)
    recon = decoder.reconstruct(fp)
    images, labels = images_for(fp, data_root, download)
    if figure_class is not None and not (labels == figure_class).any():
        present = sorted(set(labels.tolist()))
        raise InvalidValueError(f"--figure-class {figure_class} has no fingerprinted images "
                                f"(classes present: {', '.join(map(str, present))})")
    ensure_writable_dir(out)
    train = load_dataset(fp.meta["dataset"], "train", data_root, download)
    classifier = None
    if classifier_dir is not None:
        evaluator = load_model(classifier_dir)
        if evaluator.hash == fp.meta.get("model_hash"):
            raise InvalidValueError("the class-recovery classifier must be trained independently of the target model")
        classifier = evaluator.model
    report = reconstruction_report(recon, images, labels, train.images, train.labels, classifier)
    summary = fp.summary()
    metrics = {"metrics": report, "fingerprints": {**summary, "file": str(fingerprints_file)},
               "identity": {k: fp.meta.get(k) for k in ("dataset", "split", "split_hash", "model_hash", "arch",
                                                        "directions_hash", "directions_family", "directions_count",
                                                        "oracle", "search")},
               "decoder": {**{k: decoder.meta.get(k) for k in ("n_train", "best_epoch", "best_val_mse")},
                           "train_seconds": _json_field(Path(decoder_dir) / "decoder.json", "train_seconds")},
               "classifier_hash": None if classifier_dir is None else evaluator.hash,
               "hesig_version": __version__, **identity("reconstruction", job)}
    save_tensors(out / "reconstructions.safetensors", {"reconstructions": recon, "indices": fp.indices},
                 metrics["identity"])
    atomic_write_json(out / "metrics.json", metrics)

    # Figures: every reconstruction beside the class-mean image of its true class (the baseline a
    # reader needs to judge whether the attack recovered more than the label).
    class_means = class_mean_baseline(train.images, train.labels, labels)
    m = min(figure_count, len(recon))
    viz.reconstruction_grid([images[:m], recon[:m], class_means[:m]],
                            ["original", "reconstruction", "class mean\n(label only)"], out / "fig2_reconstructions.png",
                            title=f"{fp.meta['dataset']} {fp.meta['split']}: reconstructions from "
                                  f"{fp.num_directions}-direction ε signatures ({summary['queries_per_fingerprint_mean']:.0f} "
                                  f"queries each); bottom: mean training image of the true class",
                            col_labels=[f"class {int(c)}" for c in labels[:m]])
    cls = int(labels[0]) if figure_class is None else int(figure_class)
    pick = (labels == cls).nonzero().squeeze(1)[:class_figure_count]
    if pick.numel():
        viz.class_grid(images[pick], recon[pick], out / "fig3_single_class.png",
                       title=f"class {cls}: does the reconstruction keep each input's style? "
                             f"(the class mean, bottom, is the same for all)",
                       class_mean=class_means[pick[0]], class_mean_label="class mean\n(label only)")
    # Signatures of a few inputs of distinct classes, one panel each, against the test split's median.
    shown: list[int] = []
    for i, label in enumerate(labels.tolist()):
        if label not in {int(labels[j]) for j in shown}:
            shown.append(i)
        if len(shown) == 4:
            break
    drawn = torch.where(fp.censored, torch.full_like(fp.eps, float(fp.meta["search"]["eps_max"])), fp.eps)
    viz.signature_panels(fp.eps[shown], fp.censored[shown], labels[shown], images[shown], out / "signatures.png",
                         title=f"ε signatures of {len(shown)} test inputs of different classes "
                               f"({fp.num_directions} directions each)",
                         eps_max=fp.meta["search"]["eps_max"], reference=drawn.median(0).values)
    return {"out": str(out), "n": len(recon), **{f"attack_{k}": v for k, v in report["attack"].items() if k != "n"},
            "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
            "baseline_mean_image_ssim": report["baseline_mean_image"]["ssim_mean"],
            "queries_per_fingerprint_mean": summary["queries_per_fingerprint_mean"]}
