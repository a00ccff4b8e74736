"""Jobs behind ``hesig attack rmle | inverse-network | shadow`` (He et al., ACSAC 2019).

Each job loads a target checkpoint, splits it at a named layer into edge f_θ1 (trusted side) and
cloud f_θ2 (the adversary's side), lets the trusted side compute the victims' intermediate
outputs (plus optional Gaussian noise, the §7.4 defense), hands the adversary only what its
threat model allows, and scores the reconstructions with :mod:`hesig.metrics` (data_range 1.0)
on the attacked test images and on He et al.'s protocol (the first test image of each class).

What each adversary receives:

* ``rmle`` (white box): the edge's weights and the observed features. 0 queries.
* ``inverse-network`` (black box): query access to the edge (one query per input of its query
  set, answered with the same noise as the victims get) and the observed features.
* ``shadow`` (query-free): the cloud part, the edge's *structure* (or not: ``different``), a
  labelled set from the training distribution, and the observed features. 0 queries.

The job's state lives in a :class:`~hesig.jobs.runstore.RunStore` rooted at ``out``: run.json
pins the configuration, rMLE runs in checksummed chunks (``out/chunks/rmle_<start>_<stop>``) and
a shadow is saved once trained (``out/shadow``); rerunning the same command resumes, a different
one into the same ``out`` is refused with one line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..attacks.base import EdgeQueryAccess, ShadowKnowledge, WhiteBoxEdge
from ..attacks.split_inference.inverse_network import DESIGNS, InverseNetwork
from ..attacks.split_inference.rmle import RMLE
from ..attacks.split_inference.shadow import STRUCTURES, ShadowModel
from ..core.defaults import INVERSE_TRAINING, QUERY_SETS, RMLE_CHUNK_SIZE, SHADOW_DATA, SHADOW_TRAINING
from ..core.defaults import RMLE as RMLE_DEFAULTS
from ..core.defaults import SPLIT_ATTACKS as ATTACKS
from ..core.errors import InvalidValueError, MismatchError
from ..core.outputs import refuse_inside_inputs
from ..core.io import atomic_write_json, save_tensors, state_dict_hash, tensor_hash
from ..core.runtime import describe_device, parse_indices, resolve_device
from ..data import Dataset, load_dataset, train_half
from ..defenses.feature_noise import FeatureNoise, edge_features, split_accuracy
from ..evaluation import viz
from ..evaluation.metrics import reconstruction_report, ssim_own_range, summarize
from ..models import build_model, load_model, split_model
from .executor import Executor
from .runstore import RunStore

#: What the adversary's training takes when the command does not say (inverse network, shadow).
TRAINING = {"inverse-network": INVERSE_TRAINING, "shadow": SHADOW_TRAINING}


def protocol_indices(test: Dataset) -> torch.Tensor:
    """He et al.'s evaluation images: the first test image of each class, in class order -> [classes]."""
    first = [int((test.labels == c).nonzero()[0]) for c in range(test.num_classes) if (test.labels == c).any()]
    return torch.tensor(first, dtype=torch.long)


def _adversary_data(meta: dict[str, Any], which: str, data_root, download: bool) -> Dataset:
    """The target's own training data (``train``/``same``) or the disjoint half (``disjoint``)."""
    half = meta.get("train_half", "all")
    full = load_dataset(meta["dataset"], "train", data_root, download)
    if which in ("train", "same"):
        data = train_half(full, half)
        if meta.get("train_split_hash") not in (None, data.split_hash):
            raise MismatchError(f"the data at hand is not what model was trained on (split hash {data.split_hash} != "
                                f"{meta.get('train_split_hash')}); check --data-root")
        return data
    if half == "all":
        raise InvalidValueError("the target was trained on the whole training split, so no disjoint set from the same "
                                "distribution exists; train it with 'hesig train-model --train-half a'")
    return train_half(full, "b" if half == "a" else "a")


def _rmle_chunked(attacker: RMLE | ShadowModel, rmle: RMLE, observed: torch.Tensor, in_shape, store: RunStore,
                  chunk_size: int, log, executor: Executor | None = None) -> tuple[torch.Tensor, float, list[float]]:
    """Run the fitted rMLE-based ``attacker`` over ``observed`` in checksummed chunks of the run
    store (finished ones are reused) on ``executor``; returns (recon, seconds, final feature distances).

    The starts come from ``rmle``'s settings for the whole set at once, so neither the chunk size
    nor the executor changes an image. The chunk function closes over the fitted attacker (its
    edge or shadow model) and the observed features only: that is what a Ray worker receives.
    """
    initial = rmle.initial_images(len(observed), in_shape)
    bounds = [(start, min(start + chunk_size, len(observed))) for start in range(0, len(observed), chunk_size)]

    def compute(i: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        start, stop = bounds[i]
        result = attacker.reconstruct(observed[start:stop], initial=initial[start:stop])
        return ({"recon": result.images, "distance": torch.tensor(result.details["final_feature_distance"])},
                {"seconds": result.seconds})

    def saved(i: int, tensors, meta) -> None:
        log(f"rMLE images {bounds[i][0]}-{bounds[i][1] - 1} of {len(observed)}: {meta['seconds']:.1f}s")

    parts = store.chunks([f"chunks/rmle_{start:06d}_{stop:06d}" for start, stop in bounds], compute, on_saved=saved,
                         executor=executor)
    return (torch.cat([tensors["recon"] for tensors, _ in parts]), sum(float(meta["seconds"]) for _, meta in parts),
            [d for tensors, _ in parts for d in tensors["distance"].tolist()])


def attack_job(attack: str, model_dir: str | Path, split: str, out: str | Path, *, indices: str | None = None,
               feature_noise: float = 0.0, seed: int = 0, rmle: dict[str, Any] | None = None,
               query_set: str = "train", queries: int | None = None, design: str = "auto",
               epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
               shadow_data: str = "same", structure: str = "same", chunk_size: int = RMLE_CHUNK_SIZE,
               device: str | None = None, data_root=None, download: bool = False, progress: bool = True,
               executor: Executor | None = None, log=lambda message: None) -> dict[str, Any]:
    """Run one attack cell; write reconstructions, metrics.json and protocol.png into ``out``.

    rmle: rMLE settings (keys of :data:`RMLE_DEFAULTS`), used by ``rmle`` and ``shadow``.
    query_set / queries / design: the inverse network's query set, its size (default: all of
    it; Gaussian: as many as the target's training set) and architecture.
    shadow_data / structure: the shadow's labelled data and architecture knowledge.
    epochs, batch_size, lr: training of the inverse network or shadow (defaults:
    :data:`hesig.core.defaults.INVERSE_TRAINING` / ``SHADOW_TRAINING``).
    chunk_size: images per resumable rMLE chunk (not part of the pinned configuration: it changes
    no result). executor: where the rMLE chunks run (``rmle`` and ``shadow``; default: here).
    """
    if attack not in ATTACKS:
        raise InvalidValueError(f"unknown attack {attack!r} (choose from {', '.join(ATTACKS)})")
    for name, value, options in (("query set", query_set, QUERY_SETS), ("design", design, DESIGNS),
                                 ("shadow data", shadow_data, SHADOW_DATA), ("structure", structure, STRUCTURES)):
        if value not in options:
            raise InvalidValueError(f"unknown {name} {value!r} (choose from {', '.join(options)})")
    rmle_settings = {**RMLE_DEFAULTS, **(rmle or {})}
    unknown = set(rmle_settings) - set(RMLE_DEFAULTS)
    if unknown:
        raise InvalidValueError(f"unknown rMLE settings: {', '.join(sorted(unknown))}")
    if attack in TRAINING:
        defaults = TRAINING[attack]
        epochs, batch_size, lr = epochs or defaults["epochs"], batch_size or defaults["batch_size"], lr or defaults["lr"]
    out = Path(out)
    dev = resolve_device(device)
    target = load_model(model_dir, dev)
    meta, in_shape = target.meta, target.in_shape
    edge, cloud = split_model(target.model, split)
    test = load_dataset(meta["dataset"], "test", data_root, download)
    victims = test.subset(parse_indices(indices, len(test)))
    own = _adversary_data(meta, "train", data_root, download)  # the target's training data (baselines, queries)
    settings = {"attack": attack, "model_hash": target.hash, "split": split, "test_split_hash": test.split_hash,
                "indices": victims.indices.tolist(), "feature_noise": feature_noise, "seed": seed}
    if attack == "rmle":
        settings["rmle"] = rmle_settings
    elif attack == "inverse-network":
        settings.update(query_set=query_set, queries=queries, design=design, epochs=epochs, batch_size=batch_size, lr=lr)
    else:
        data = own if shadow_data == "same" else _adversary_data(meta, shadow_data, data_root, download)
        settings.update(shadow_data=shadow_data, structure=structure, epochs=epochs, batch_size=batch_size, lr=lr,
                        shadow_data_hash=data.split_hash, rmle=rmle_settings)
    refuse_inside_inputs(out, (model_dir,))
    store = RunStore(out, f"{attack} attack", settings, log=log)

    # Trusted side: the victims' features (what the adversary observes) and the defended accuracy.
    observed = edge_features(edge, victims.images, FeatureNoise(feature_noise, seed))
    defended_acc = split_accuracy(edge, cloud, test.images, test.labels, FeatureNoise(feature_noise, seed + 2))
    info: dict[str, Any] = {"queries": 0}
    t0 = time.perf_counter()

    if attack == "rmle":
        attacker = RMLE(seed=seed, **rmle_settings).fit(WhiteBoxEdge(edge, in_shape))
        recon, seconds, dists = _rmle_chunked(attacker, attacker, observed, in_shape, store, chunk_size, log, executor)
        info.update(rmle=rmle_settings, attack_seconds=seconds, final_feature_distance_mean=sum(dists) / len(dists))
    elif attack == "inverse-network":
        if query_set == "gaussian":
            m = queries or len(own)
            # standard Gaussian inputs (zero mean, unit variance), as in He et al. §5.1
            inputs = torch.randn((m, *in_shape), generator=torch.Generator().manual_seed(seed))
            query_hash = f"gaussian:{m}:{seed}"
        else:
            pool = own if query_set == "train" else _adversary_data(meta, query_set, data_root, download)
            m = min(queries or len(pool), len(pool))
            pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:m]
            inputs = pool.images[pick]
            query_hash = tensor_hash(inputs)
        answers = edge_features(edge, inputs, FeatureNoise(feature_noise, seed + 1))  # the m black-box queries
        inverse = InverseNetwork(design=design, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=dev,
                                 progress=progress).fit(EdgeQueryAccess(inputs, answers))
        result = inverse.reconstruct(observed)
        recon, training = result.images, inverse.training
        info.update(queries=result.queries, query_set=query_set, query_set_hash=query_hash, design=design, epochs=epochs,
                    train_seconds=training["seconds"], inversion_seconds=result.seconds,
                    attack_seconds=training["seconds"] + result.seconds, final_train_loss=training["train_loss"][-1])
    else:
        # The adversary knows the architecture's *structure* (same) or not (different), never its weights:
        # the template is a freshly built, untrained copy of the target's arch, split at the same layer.
        template, _ = split_model(build_model(meta["arch"], in_shape, meta["num_classes"]), split)
        rmle_attack = RMLE(seed=seed, **rmle_settings)
        attacker = ShadowModel(structure=structure, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               rmle=rmle_attack, device=dev, progress=progress)
        knowledge = ShadowKnowledge(template, cloud, data.images, data.labels)
        saved = store.load("shadow")  # trained once: a resumed job rebuilds it instead of training again
        if saved is None:
            attacker.fit(knowledge)
            store.save("shadow", {k: v.detach().cpu() for k, v in attacker.shadow.state_dict().items()},
                       {"training": attacker.training})
        else:
            attacker.fit(knowledge, trained=(saved[0], saved[1]["training"]))
        shadow, training = attacker.shadow, attacker.training
        shadow_acc = split_accuracy(shadow, cloud, test.images, test.labels)
        recon, seconds, dists = _rmle_chunked(attacker, rmle_attack, observed, in_shape, store, chunk_size, log, executor)
        info.update(rmle=rmle_settings, shadow_data=shadow_data, structure=structure, epochs=epochs,
                    shadow_train_seconds=training["seconds"], shadow_train_accuracy=training["train_accuracy"],
                    shadow_test_accuracy_through_cloud=shadow_acc, shadow_hash=state_dict_hash(shadow.state_dict()),
                    rmle_seconds=seconds, attack_seconds=training["seconds"] + seconds,
                    final_feature_distance_mean=sum(dists) / len(dists))

    # Scoring: all attacked images (hesig's metrics) and He et al.'s ten-image protocol.
    report = reconstruction_report(recon, victims.images, victims.labels, own.images, own.labels)
    wanted = protocol_indices(test)
    where = {int(i): p for p, i in enumerate(victims.indices.tolist())}
    present = [where[int(i)] for i in wanted if int(i) in where]
    protocol = None
    if present:
        r, t = recon[present], victims.images[present]
        protocol = {**summarize(r, t), "ssim_own_range_mean": float(ssim_own_range(r, t).mean()),
                    "test_indices": [int(victims.indices[p]) for p in present]}
        viz.reconstruction_grid([t, r], ["original", attack], out / "protocol.png",
                                title=f"{attack} at {split} ({meta['arch']}, {meta['dataset']}): first test image "
                                      f"of each class", col_labels=[str(int(victims.labels[p])) for p in present])
    metrics = {"attack": attack, "split": split, "arch": meta["arch"], "dataset": meta["dataset"],
               "model_hash": target.hash, "train_half": meta.get("train_half", "all"),
               "target_test_accuracy": meta.get("test_accuracy"), "feature_noise": feature_noise,
               "defended_accuracy": defended_acc, "feature_rms": float(observed.pow(2).mean().sqrt()),
               "n": len(victims), "test_split_hash": test.split_hash, "indices_hash": tensor_hash(victims.indices),
               "metrics": report, "protocol": protocol, **info, "wall_seconds": time.perf_counter() - t0,
               "seed": seed, "device": str(dev), "ran_on": describe_device(dev), "hesig_version": __version__}
    save_tensors(out / "reconstructions.safetensors", {"reconstructions": recon, "indices": victims.indices},
                 {"model_hash": target.hash, "attack": attack, "split": split})
    atomic_write_json(out / "metrics.json", metrics)
    a = report["attack"]
    return {"out": str(out), "attack": attack, "split": split, "n": len(victims), "psnr_mean": a["psnr_mean"],
            "ssim_mean": a["ssim_mean"], "protocol_psnr": protocol and protocol["psnr_mean"],
            "protocol_ssim": protocol and protocol["ssim_mean"], "queries": info["queries"],
            "attack_seconds": round(info["attack_seconds"], 2), "defended_accuracy": defended_acc}
