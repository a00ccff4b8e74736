"""Jobs ``hesig train-model`` and ``hesig directions``: the model owner's own artifacts."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..core.defaults import CLASSIFIER_TRAINING, EPOCHS_BY_ARCH, EPOCHS_OTHER_ARCH
from ..core.errors import InvalidValueError, ShapeError
from ..core.io import ensure_writable_dir
from ..core.runtime import resolve_device
from ..data import load_dataset
from ..data import train_half as select_train_half
from ..core.outputs import guard_output, identity
from ..models import accuracy, build_model, load_model, save_model, train_classifier
from ..models.checkpoint import META_FILE, WEIGHTS_FILE
from ..signature.directions import make_directions, required_context


def train_model_job(dataset: str, arch: str, out: str | Path, *, epochs: int | None = None, seed: int = 0,
                    batch_size: int = CLASSIFIER_TRAINING["batch_size"], lr: float = CLASSIFIER_TRAINING["lr"],
                    train_half: str = "all", data_root=None, download: bool = False, device: str | None = None,
                    force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``arch`` on ``dataset``'s train split (or one fixed half of it, see
    :func:`hesig.data.train_half`); save weights + metadata into ``out``. The same seed gives a
    byte-identical ``model.safetensors`` on the CPU."""
    epochs = epochs or EPOCHS_BY_ARCH.get(arch, EPOCHS_OTHER_ARCH)
    job = {"dataset": dataset, "arch": arch, "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
           "train_half": train_half}
    guard_output(Path(out) / WEIGHTS_FILE, "model", job, also_writes=[Path(out) / META_FILE], force=force)
    ensure_writable_dir(out)
    dev = resolve_device(device)
    train = select_train_half(load_dataset(dataset, "train", data_root, download), train_half)
    test = load_dataset(dataset, "test", data_root, download)
    torch.manual_seed(seed)  # weight init belongs to the seed too: build the model after seeding
    model = build_model(arch, train.shape, train.num_classes)
    t0 = time.perf_counter()
    history = train_classifier(model, train.images, train.labels, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, device=dev, progress=progress)
    seconds = time.perf_counter() - t0
    test_acc = accuracy(model, test.images, test.labels)
    meta = {"arch": arch, "dataset": train.name, "in_shape": list(train.shape), "num_classes": train.num_classes,
            "classes": list(train.classes), "train_half": train_half, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "train_split_hash": train.split_hash, "test_accuracy": test_acc, "train_loss": history,
            "train_seconds": round(seconds, 1), "device": str(dev), **identity("model", job)}
    save_model(model.cpu(), out, meta)
    return {"out": str(out), "arch": arch, "dataset": train.name, "train_half": train_half, "test_accuracy": test_acc,
            "train_seconds": round(seconds, 1), "model_hash": load_model(out).hash}


def directions_job(family: str, count: int, out: str | Path, *, dataset: str = "mnist", seed: int = 0,
                   model_dir: str | Path | None = None, mix: str | None = None, device: str | None = None,
                   data_root=None, download: bool = False, force: bool = False, progress: bool = False,
                   **family_options: Any) -> dict[str, Any]:
    """Build and save a direction set (``progress``: a bar while a family trains). Families that use data read the *train* split (the model
    owner's own data); adversarial families also load the model from ``model_dir``. The data
    split hash and model hash are recorded in the file's params."""
    needs = required_context(family, mix)
    if mix is not None and family != "mix":
        raise InvalidValueError(f"--mix only applies to --family mix, not '{family}'")
    target_hash = load_model(model_dir).hash if model_dir is not None and "model" in needs else None
    job = {"family": family, "count": count, "dataset": dataset, "seed": seed, "mix": mix, "model_hash": target_hash,
           **{k: v for k, v in family_options.items() if v is not None}}
    guard_output(out, "directions", job, inputs=(model_dir,), force=force)
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
    check_fits_in_memory(count, shape)
    if "model" in needs:
        if model_dir is None:
            raise InvalidValueError(f"direction family '{family}' is built from the model: pass --model")
        target = load_model(model_dir)
        if tuple(target.in_shape) != tuple(shape):
            raise ShapeError(f"model {target.arch} takes {list(target.in_shape)} but {dataset} images are {list(shape)}")
        context.update(model=target.model.to(resolve_device(device)), model_hash=target.hash, arch=target.arch)
    t0 = time.perf_counter()
    dirs = make_directions(family, count, shape, seed, progress=progress, **context)
    dirs.params["build_seconds"] = round(time.perf_counter() - t0, 2)
    dirs.save(out, extra=identity("directions", job))
    return {"out": str(out), **dirs.meta()}


def check_fits_in_memory(count: int, shape: tuple[int, ...]) -> None:
    """Refuse a direction set that would take more than half of this machine's memory (float32)."""
    needed = count * int(torch.tensor(shape).prod()) * 4
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total // 2:
        raise InvalidValueError(f"{count} directions of shape {list(shape)} need {needed / 2**30:.1f} GiB "
                                f"(float32); this machine has {total / 2**30:.1f} GiB: ask for fewer")
