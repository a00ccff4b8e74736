"""The jobs behind the CLI: each loads its inputs, calls the library, writes artifacts and returns
a JSON-serialisable summary. The CLI only parses options and prints these summaries.

Artifacts carry the hashes of what they came from (model weights, directions, data split), and
each job checks them before combining artifacts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data import load_dataset
from .data import train_half as select_train_half
from .decoders import DEFAULT_NGF, FingerprintDecoder, FingerprintFeatures, train_decoder
from .directions import Directions, make_directions, required_context
from .errors import InvalidValueError, MismatchError, ShapeError
from .fingerprints import Fingerprints, fingerprint_dataset
from .io import atomic_write_json, ensure_writable_dir, save_tensors
from .metrics import reconstruction_report
from .models import accuracy, build_model, load_model, save_model, train_classifier
from .oracles import PlaintextOracle, default_device
from .oracles.ckks import POLY_CNN_DEPTH, CKKSOracle, CKKSParameters, poly_cnn
from .oracles.names import CKKS_LAYOUTS, ORACLES
from .search import BoundarySearch
from . import viz

#: Epochs that reach the accuracy targets on MNIST (lenet5 >= 99.0%, hecnn >= 98.0%).
DEFAULT_EPOCHS = {"lenet5": 12, "hecnn": 12, "mlp": 40}
#: Default search range (0, ε_max] in L2 units of unit-norm directions. With 30, a third of the
#: MNIST/lenet5 pairs were censored and the flipping ε piled up just below 30 (99th percentile
#: 29.8), so the range was cutting information off; 60 costs one more bisection step.
DEFAULT_EPS_MAX = 60.0


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return default_device()
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidValueError(f"unknown device '{device}' (choose from auto, cpu, cuda)")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidValueError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(device)


def parse_indices(spec: str | None, n: int) -> torch.Tensor:
    """'' / None -> all; 'A:B' -> range; 'i,j,k' -> list. Positions into a split of size n."""
    if not spec:
        return torch.arange(n)
    try:
        if ":" in spec:
            start, _, stop = spec.partition(":")
            idx = torch.arange(n)[slice(int(start) if start else None, int(stop) if stop else None)]
        else:
            idx = torch.tensor([int(v) for v in spec.split(",")], dtype=torch.long)
    except ValueError:
        raise InvalidValueError(f"cannot parse indices '{spec}' (use A:B or i,j,k)") from None
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise InvalidValueError(f"indices '{spec}' select nothing or fall outside 0..{n - 1}")
    return idx


# -- train-model ------------------------------------------------------------------------------

def train_model_job(dataset: str, arch: str, out: str | Path, *, epochs: int | None = None, seed: int = 0,
                    batch_size: int = 128, lr: float = 2e-3, train_half: str = "all", data_root=None,
                    download: bool = False, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``arch`` on ``dataset``'s train split (or one fixed half of it, see
    :func:`hesig.data.train_half`); save weights + metadata into ``out``."""
    ensure_writable_dir(out)
    dev = resolve_device(device)
    train = select_train_half(load_dataset(dataset, "train", data_root, download), train_half)
    test = load_dataset(dataset, "test", data_root, download)
    torch.manual_seed(seed)  # weight init belongs to the seed too: build the model after seeding
    model = build_model(arch, train.shape, train.num_classes)
    epochs = epochs or DEFAULT_EPOCHS.get(arch, 10)
    t0 = time.perf_counter()
    history = train_classifier(model, train.images, train.labels, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, device=dev, progress=progress)
    seconds = time.perf_counter() - t0
    test_acc = accuracy(model, test.images, test.labels)
    meta = {"arch": arch, "dataset": train.name, "in_shape": list(train.shape), "num_classes": train.num_classes,
            "classes": list(train.classes), "train_half": train_half, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "train_split_hash": train.split_hash, "test_accuracy": test_acc, "train_loss": history,
            "train_seconds": round(seconds, 1), "device": str(dev)}
    save_model(model.cpu(), out, meta)
    return {"out": str(out), "arch": arch, "dataset": train.name, "train_half": train_half, "test_accuracy": test_acc,
            "train_seconds": round(seconds, 1), "model_hash": load_model(out).hash}


# -- directions -------------------------------------------------------------------------------

def directions_job(family: str, count: int, out: str | Path, *, dataset: str = "mnist", seed: int = 0,
                   model_dir: str | Path | None = None, mix: str | None = None, device: str | None = None,
                   data_root=None, download: bool = False, **family_options: Any) -> dict[str, Any]:
    """Build and save a direction set. Families that use data read the *train* split (the model
    owner's own data); adversarial families also load the model from ``model_dir``. The data
    split hash and model hash are recorded in the file's params."""
    needs = required_context(family, mix)
    if mix is not None and family != "mix":
        raise InvalidValueError(f"--mix only applies to --family mix, not '{family}'")
    context: dict[str, Any] = {k: v for k, v in family_options.items() if v is not None}
    if mix is not None:
        context["mix"] = mix
    if "train_images" in needs or "train_labels" in needs:
        train = load_dataset(dataset, "train", data_root, download)
        shape = train.shape
        context.update(train_images=train.images, train_labels=train.labels, dataset=dataset,
                       split_hash=train.split_hash)
    else:
        shape = load_dataset(dataset, "test", data_root, download).shape
    if "model" in needs:
        if model_dir is None:
            raise InvalidValueError(f"direction family '{family}' is built from the model: pass --model")
        target = load_model(model_dir)
        if tuple(target.in_shape) != tuple(shape):
            raise ShapeError(f"model {target.arch} takes {list(target.in_shape)} but {dataset} images are {list(shape)}")
        context.update(model=target.model.to(resolve_device(device)), model_hash=target.hash, arch=target.arch)
    t0 = time.perf_counter()
    dirs = make_directions(family, count, shape, seed, **context)
    dirs.params["build_seconds"] = round(time.perf_counter() - t0, 2)
    dirs.save(out)
    return {"out": str(out), **dirs.meta()}


# -- fingerprint ------------------------------------------------------------------------------

def fingerprint_job(model_dir: str | Path, directions_file: str | Path, dataset: str, split: str, out: str | Path, *,
                    oracle: str = "plaintext", indices: str | None = None, eps_max: float = DEFAULT_EPS_MAX,
                    rtol: float = 1e-2, atol: float = 0.0, coarse_points: int = 8, points_per_round: int | str = 1,
                    chunk_size: int | None = None, budget: int | None = None, batch_size: int | None = None,
                    device: str | None = None, data_root=None, download: bool = False, ckks_layout: str = "batched",
                    progress: bool = True) -> dict[str, Any]:
    """Fingerprint (a subset of) a dataset split through a label-change oracle; resumable.

    oracle: "plaintext" (the secrets inside the oracle object) or "ckks" (a TenSEAL client holding
    the secret key, a server holding the public context; ``ckks_layout`` batched or compact).
    chunk_size: rows per atomically saved chunk (default 1000 plaintext, 1 for CKKS).
    """
    search = BoundarySearch(eps_max, coarse_points=coarse_points, points_per_round=points_per_round,
                            atol=atol, rtol=rtol)
    if oracle not in ORACLES:
        raise InvalidValueError(f"unknown oracle '{oracle}' (choose from {', '.join(ORACLES)})")
    if ckks_layout not in CKKS_LAYOUTS:
        raise InvalidValueError(f"unknown CKKS layout '{ckks_layout}' (choose from {', '.join(CKKS_LAYOUTS)})")
    if chunk_size is None:
        chunk_size = 1 if oracle == "ckks" else 1000  # CKKS: each image is its own resumable chunk
    if budget is not None and budget < 1:
        raise InvalidValueError(f"query budget must be >= 1, got {budget}")
    dev = resolve_device(device)
    target = load_model(model_dir)
    dirs = Directions.load(directions_file)
    dirs.check_input_shape(target.in_shape, what=f"model {target.arch}'s input")
    data = load_dataset(dataset, split, data_root, download)
    if data.shape != target.in_shape:
        raise ShapeError(f"{data.name} images are {list(data.shape)} but model {target.arch} takes {list(target.in_shape)}")
    idx = parse_indices(indices, len(data))
    ensure_writable_dir(Path(out).parent)

    if oracle == "ckks":
        ckks_params = CKKSParameters()
        ckks_params.check_depth(poly_cnn(target.model, target.in_shape, target.arch).depth, target.arch)

    def make_oracle(secrets: torch.Tensor, remaining: int | None):
        if oracle == "ckks":
            return CKKSOracle(target.model, secrets, in_shape=target.in_shape, arch=target.arch, params=ckks_params,
                              layout=ckks_layout, budget=remaining)
        return PlaintextOracle(target.model, secrets, device=dev, batch_size=batch_size, budget=remaining)

    meta = {"dataset": data.name, "split": data.split, "split_hash": data.split_hash, "model_hash": target.hash,
            "arch": target.arch, "directions_hash": dirs.hash, "directions_family": dirs.family,
            "directions_count": dirs.count, "oracle": oracle, "seed": dirs.seed}
    if oracle == "ckks":
        meta["ckks"] = {**ckks_params.describe(POLY_CNN_DEPTH), "layout": ckks_layout}
    t0 = time.perf_counter()
    fp = fingerprint_dataset(make_oracle, dirs.vectors, data.images[idx], data.indices[idx], search, out, meta,
                             chunk_size=chunk_size, budget=budget, progress=progress)
    seconds = time.perf_counter() - t0
    summary = {"out": str(out), "seconds_this_run": round(seconds, 1), "device": str(dev), **fp.summary(),
               "model_hash": target.hash, "directions_hash": dirs.hash}
    if fp.meta.get("oracle_costs"):
        summary["oracle_costs"] = fp.meta["oracle_costs"]
    return summary


def ckks_params_job(model_dir: str | Path | None = None) -> dict[str, Any]:
    """The CKKS parameters, their security level and depth budget (and a model's needs, if given)."""
    params = CKKSParameters()
    out = params.describe(POLY_CNN_DEPTH)
    if model_dir is not None:
        target = load_model(model_dir)
        poly = poly_cnn(target.model, target.in_shape, target.arch)
        params.check_depth(poly.depth, target.arch)
        out.update({"model": str(model_dir), "arch": target.arch, "depth_required": poly.depth, "fits": True})
    return out


# -- train-decoder ----------------------------------------------------------------------------

def _images_for(fp: Fingerprints, data_root, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The secret images and labels behind ``fp`` (for training targets and evaluation only)."""
    data = load_dataset(fp.meta["dataset"], fp.meta["split"], data_root, download)
    if fp.meta.get("split_hash") != data.split_hash:
        raise MismatchError(f"fingerprints were made from another copy of {data.name}/{data.split} (split hash differs)")
    return data.images[fp.indices], data.labels[fp.indices]


def train_decoder_job(fingerprints_file: str | Path, out: str | Path, *, epochs: int = 40, batch_size: int = 128,
                      lr: float = 2e-3, ngf: int = DEFAULT_NGF, patience: int = 5, val_fraction: float = 0.1, seed: int = 0,
                      device: str | None = None, data_root=None, download: bool = False,
                      progress: bool = True) -> dict[str, Any]:
    ensure_writable_dir(out)
    dev = resolve_device(device)
    fp = Fingerprints.load(fingerprints_file)
    images, _ = _images_for(fp, data_root, download)
    feats = FingerprintFeatures.fit(fp.eps, fp.censored, fp.meta["search"]["eps_max"])
    t0 = time.perf_counter()
    net, report = train_decoder(feats.transform(fp.eps, fp.censored), images, ngf=ngf, epochs=epochs,
                                batch_size=batch_size, lr=lr, val_fraction=val_fraction, patience=patience,
                                seed=seed, device=dev, progress=progress)
    seconds = time.perf_counter() - t0
    meta = {key: fp.meta.get(key) for key in ("model_hash", "directions_hash", "arch", "dataset", "split",
                                              "split_hash", "directions_family", "directions_count", "oracle")}
    meta.update({"trained_on": str(fingerprints_file), "n_train": len(fp), "seed": seed, "epochs_run": report.epochs_run,
                 "best_epoch": report.best_epoch, "best_val_mse": report.best_val_mse, "val_mse": report.val_mse,
                 "train_mse": report.train_mse, "train_seconds": round(seconds, 1)})
    FingerprintDecoder(net.cpu(), feats, meta).save(out)
    return {"out": str(out), "n_train": len(fp), "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
            "best_val_mse": round(report.best_val_mse, 5), "train_seconds": round(seconds, 1)}


# -- reconstruct ------------------------------------------------------------------------------

def reconstruct_job(decoder_dir: str | Path, fingerprints_file: str | Path, out: str | Path, *,
                    classifier_dir: str | Path | None = None, figure_class: int | None = None,
                    figure_count: int = 12, class_figure_count: int = 10, data_root=None, download: bool = False) -> dict[str, Any]:
    """Decode fingerprints; write reconstructions, metrics.json (beside both baselines) and figures."""
    ensure_writable_dir(out)
    out = Path(out)
    decoder = FingerprintDecoder.load(decoder_dir)
    fp = Fingerprints.load(fingerprints_file)
    recon = decoder.reconstruct(fp)
    images, labels = _images_for(fp, data_root, download)
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
               "decoder": {k: decoder.meta.get(k) for k in ("n_train", "best_epoch", "best_val_mse", "train_seconds")},
               "classifier_hash": None if classifier_dir is None else evaluator.hash,
               "hesig_version": __version__}
    save_tensors(out / "reconstructions.safetensors", {"reconstructions": recon, "indices": fp.indices},
                 metrics["identity"])
    atomic_write_json(out / "metrics.json", metrics)

    m = min(figure_count, len(recon))
    viz.reconstruction_grid([images[:m], recon[:m]], ["original", "reconstruction"], out / "fig2_reconstructions.png",
                            title=f"{fp.meta['dataset']} {fp.meta['split']}: reconstructions from "
                                  f"{fp.num_directions}-direction ε signatures ({summary['queries_per_fingerprint_mean']:.0f} queries each)")
    cls = int(labels[0]) if figure_class is None else int(figure_class)
    pick = (labels == cls).nonzero().squeeze(1)[:class_figure_count]
    if pick.numel():
        viz.class_grid(images[pick], recon[pick], out / "fig3_single_class.png",
                       title=f"class {cls}: style beyond the class label")
    viz.signature_plot(fp.eps[:5], fp.censored[:5], labels[:5], out / "signatures.png",
                       title="ε signatures of five test inputs", eps_max=fp.meta["search"]["eps_max"])
    return {"out": str(out), "n": len(recon), **{f"attack_{k}": v for k, v in report["attack"].items() if k != "n"},
            "baseline_class_mean_ssim": report["baseline_class_mean"]["ssim_mean"],
            "baseline_mean_image_ssim": report["baseline_mean_image"]["ssim_mean"],
            "queries_per_fingerprint_mean": summary["queries_per_fingerprint_mean"]}


# -- demo ---------------------------------------------------------------------------------------

#: Per-dataset demo settings: target arch, evaluator arch, decoder epochs / patience.
DEMO_SETTINGS = {
    "digits": {"arch": "mlp", "evaluator": "mlp", "decoder_epochs": 150, "patience": 15},
    "mnist": {"arch": "lenet5", "evaluator": "lenet5", "decoder_epochs": 20, "patience": 4},
    "fashion-mnist": {"arch": "lenet5", "evaluator": "lenet5", "decoder_epochs": 20, "patience": 4},
}


def demo_job(out: str | Path, *, dataset: str = "digits", arch: str | None = None, count: int = 100, seed: int = 0,
             eps_max: float = DEFAULT_EPS_MAX, rtol: float = 1e-2, coarse_points: int = 8,
             decoder_epochs: int | None = None, train_limit: str | None = None, device: str | None = None,
             data_root=None, download: bool = False, progress: bool = True, log=print) -> dict[str, Any]:
    """The whole attack: target model, evaluator, directions, fingerprints, decoder, metrics, figures.

    Every step reuses its output when it already exists in ``out`` (so an interrupted run resumes);
    ``out/demo.json`` pins the configuration and a rerun with another configuration is refused.
    """
    if dataset not in DEMO_SETTINGS:
        raise InvalidValueError(f"demo supports {', '.join(DEMO_SETTINGS)}, not '{dataset}'")
    settings = DEMO_SETTINGS[dataset]
    arch = arch or settings["arch"]
    out = ensure_writable_dir(out)
    config = {"dataset": dataset, "arch": arch, "count": count, "seed": seed, "eps_max": eps_max, "rtol": rtol,
              "coarse_points": coarse_points, "train_limit": train_limit, "hesig_version": __version__}
    config_file = out / "demo.json"
    if config_file.exists():
        if {k: v for k, v in json_load(config_file).items() if k != "hesig_version"} != \
                {k: v for k, v in config.items() if k != "hesig_version"}:
            raise MismatchError(f"{out} holds a demo with another configuration; choose another --out")
    else:
        atomic_write_json(config_file, config)
    common = {"data_root": data_root, "download": download}
    steps: dict[str, Any] = {}

    def step(name: str, done: bool, fn, **kwargs):
        if done:
            log(f"[{name}] reusing {kwargs.get('out', '')}")
            steps[name] = {"reused": True}
            return
        log(f"[{name}] ...")
        t0 = time.perf_counter()
        steps[name] = fn(**kwargs)
        steps[name]["step_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"[{name}] done in {steps[name]['step_seconds']} s")

    step("train-model", (out / "model" / "model.safetensors").exists(), train_model_job, dataset=dataset, arch=arch,
         out=out / "model", seed=seed, device=device, progress=progress, **common)
    step("train-evaluator", (out / "evaluator" / "model.safetensors").exists(), train_model_job, dataset=dataset,
         arch=settings["evaluator"], out=out / "evaluator", seed=seed + 1000, device=device, progress=progress, **common)
    step("directions", (out / "directions.safetensors").exists(), directions_job, family="random", count=count,
         out=out / "directions.safetensors", dataset=dataset, seed=seed, **common)
    for split, limit in (("train", train_limit), ("test", None)):
        fp_out = out / f"fingerprints_{split}.safetensors"
        step(f"fingerprint-{split}", fp_out.exists(), fingerprint_job, model_dir=out / "model",
             directions_file=out / "directions.safetensors", dataset=dataset, split=split, out=fp_out, indices=limit,
             eps_max=eps_max, rtol=rtol, coarse_points=coarse_points, device=device, progress=progress, **common)
    step("train-decoder", (out / "decoder" / "decoder.safetensors").exists(), train_decoder_job,
         fingerprints_file=out / "fingerprints_train.safetensors", out=out / "decoder",
         epochs=decoder_epochs or settings["decoder_epochs"], patience=settings["patience"], seed=seed,
         device=device, progress=progress, **common)
    step("reconstruct", False, reconstruct_job, decoder_dir=out / "decoder",
         fingerprints_file=out / "fingerprints_test.safetensors", out=out / "reconstruct",
         classifier_dir=out / "evaluator", **common)
    # Costs come from the artifacts themselves, so a resumed demo reports the same numbers.
    fingerprints = {split: Fingerprints.load(out / f"fingerprints_{split}.safetensors").summary()
                    for split in ("train", "test")}
    summary = {"config": config, "steps": steps, "fingerprints": fingerprints,
               "metrics": json_load(out / "reconstruct" / "metrics.json"),
               "target_model": json_load(out / "model" / "model.json"),
               "evaluator_model": json_load(out / "evaluator" / "model.json")}
    atomic_write_json(out / "summary.json", summary)
    return summary


def json_load(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
