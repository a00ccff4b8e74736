"""Fingerprint files E_x and the resumable job that computes them for a dataset split.

A fingerprint file (safetensors, never pickled) holds, for n inputs and k directions:

* ``eps``      float32 [n, k]: minimal flipping ε (L2 units); +inf where censored.
* ``censored`` bool    [n, k]: no flip found in (0, ε_max].
* ``queries``  int32   [n, k]: oracle queries spent per pair.
* ``indices``  int64   [n]:    positions of the inputs in their dataset split.

and metadata: dataset, split, split_hash, model_hash, arch, directions_hash, oracle, the search
parameters, seed and package version. Consumers check ``model_hash`` / ``directions_hash``
before mixing files.

The job (:func:`fingerprint_dataset`) works in chunks of rows. Each finished chunk is written
atomically into ``<out>.chunks/``; rerunning the same command skips finished chunks, so a kill
loses at most the chunk in flight. When every chunk is done they are merged into ``<out>``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import __version__
from .errors import CheckpointError, HesigError, InvalidValueError, MismatchError, QueryBudgetExhausted
from .io import atomic_write_json, load_tensors, save_tensors, tensor_hash
from .oracles.base import Oracle
from .search import BoundarySearch

#: Metadata keys that must agree for two fingerprint sets to be used together.
IDENTITY_KEYS = ("model_hash", "directions_hash")


@dataclass
class Fingerprints:
    eps: torch.Tensor
    censored: torch.Tensor
    queries: torch.Tensor
    indices: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n, k = self.eps.shape
        if self.censored.shape != (n, k) or self.queries.shape != (n, k) or self.indices.shape != (n,):
            raise CheckpointError("fingerprint tensors have inconsistent shapes")
        if torch.isnan(self.eps).any():
            raise InvalidValueError(f"fingerprints contain {int(torch.isnan(self.eps).sum())} NaN values")
        if (torch.isinf(self.eps) != self.censored).any():
            raise InvalidValueError("fingerprints have infinite ε on pairs not marked censored (or finite ε on censored ones)")
        if (self.eps <= 0).any():
            raise InvalidValueError("fingerprints contain non-positive ε")

    def __len__(self) -> int:
        return self.eps.shape[0]

    @property
    def num_directions(self) -> int:
        return self.eps.shape[1]

    def summary(self) -> dict[str, Any]:
        q = self.queries.sum(1).double()
        return {"n": len(self), "directions": self.num_directions, "compute_seconds": self.meta.get("compute_seconds"),
                "censored_fraction": float(self.censored.float().mean()),
                "queries_per_fingerprint_mean": float(q.mean()), "queries_total": int(q.sum()),
                "queries_per_pair_mean": float(self.queries.double().mean())}

    def first_directions(self, directions: "Any") -> "Fingerprints":
        """The fingerprints restricted to the first k = directions.count columns.

        ``directions`` must be the prefix of the set these fingerprints were made with (its hash
        is checked against the file's); the result carries the prefix's hash and count, so a
        decoder trained on it refuses fingerprints of any other set. Valid because the search
        treats every (row, direction) pair independently.
        """
        k = directions.count
        if k > self.num_directions:
            raise InvalidValueError(f"asked for the first {k} directions of fingerprints with {self.num_directions}")
        meta = {**self.meta, "directions_hash": directions.hash, "directions_count": k,
                "prefix_of": {"directions_hash": self.meta.get("directions_hash"), "count": self.num_directions}}
        return Fingerprints(self.eps[:, :k].clone(), self.censored[:, :k].clone(), self.queries[:, :k].clone(),
                            self.indices.clone(), meta)

    def check_compatible(self, reference: dict[str, Any], what: str) -> None:
        """Raise MismatchError unless model and directions hashes equal those in ``reference``."""
        for key in IDENTITY_KEYS:
            if self.meta.get(key) != reference.get(key):
                raise MismatchError(f"fingerprints were made with {key.replace('_', ' ')} {self.meta.get(key)}, "
                                    f"but {what} expects {reference.get(key)}")

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"eps": self.eps, "censored": self.censored.to(torch.uint8),
                                   "queries": self.queries, "indices": self.indices}, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "Fingerprints":
        tensors, meta = load_tensors(path, what="fingerprint file")
        missing = {"eps", "censored", "queries", "indices"} - set(tensors)
        if missing:
            raise CheckpointError(f"{path} is not a fingerprint file (missing {', '.join(sorted(missing))})")
        try:
            return cls(tensors["eps"].float(), tensors["censored"].bool(), tensors["queries"].int(),
                       tensors["indices"].long(), meta)
        except HesigError as exc:
            raise type(exc)(f"{path}: {exc}") from None

    @classmethod
    def concat(cls, parts: list["Fingerprints"], meta: dict[str, Any]) -> "Fingerprints":
        return cls(torch.cat([p.eps for p in parts]), torch.cat([p.censored for p in parts]),
                   torch.cat([p.queries for p in parts]), torch.cat([p.indices for p in parts]), meta)


def chunk_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".chunks")


def fingerprint_dataset(make_oracle: Callable[[torch.Tensor, int | None], Oracle], directions: torch.Tensor,
                        images: torch.Tensor, indices: torch.Tensor, search: BoundarySearch, out: str | Path,
                        meta: dict[str, Any], *, chunk_size: int = 1000, budget: int | None = None,
                        progress: bool = True) -> Fingerprints:
    """Fingerprint ``images`` [n, C, H, W] (dataset positions ``indices`` [n]) into ``out``.

    make_oracle(secrets, remaining_budget) builds the oracle that holds one chunk of secrets: the
    plaintext oracle, or a CKKS client/server pair. ``meta`` describes the job (dataset, model
    hash, directions hash, oracle, ...); the search parameters and the version are added here.
    ``budget`` caps the total queries over all chunks (resumed chunks count).
    """
    if chunk_size < 1:
        raise InvalidValueError(f"chunk size must be >= 1, got {chunk_size}")
    out = Path(out)
    n = images.shape[0]
    meta = {**meta, "search": search.params(), "chunk_size": int(chunk_size), "indices_hash": tensor_hash(indices),
            "n": int(n), "hesig_version": __version__}
    if out.exists():
        try:
            done = Fingerprints.load(out)
        except HesigError:
            done = None
        if done is not None and _comparable(_job_keys(done.meta)) == _comparable(_job_keys(meta)):
            return done  # the same job already finished: rerunning it is a no-op
    work = chunk_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "job.json"
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise CheckpointError(f"{manifest} is unreadable; delete {work} to start this job afresh") from None
        if _comparable(previous) != _comparable(meta):
            raise MismatchError(f"{work} holds chunks of a different job; delete it or choose another --out")
    else:
        atomic_write_json(manifest, meta)

    bounds = [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]
    parts: list[Fingerprints | None] = [None] * len(bounds)
    used = 0
    for i, (s, e) in enumerate(bounds):
        path = work / f"chunk-{i:05d}.safetensors"
        if path.exists():
            try:
                part = Fingerprints.load(path)
            except HesigError:
                path.unlink()  # a chunk is written atomically, so this only happens to a tampered file
                continue
            if not torch.equal(part.indices, indices[s:e]):
                raise MismatchError(f"{path} covers other inputs than this job; delete {work}")
            parts[i] = part
            used += int(part.queries.sum())

    done_rows = sum(e - s for (s, e), p in zip(bounds, parts) if p is not None)
    bar = tqdm(total=n, initial=done_rows, desc="fingerprint", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for i, (s, e) in enumerate(bounds):
            if parts[i] is not None:
                continue
            remaining = None if budget is None else budget - used
            t0 = time.perf_counter()
            oracle = make_oracle(images[s:e], remaining)
            try:
                res = search.run(oracle, directions)
            except QueryBudgetExhausted as exc:
                finished = sum(p is not None for p in parts)
                raise QueryBudgetExhausted(f"{exc}; {finished} of {len(bounds)} chunks are saved in {work} "
                                           "and a rerun with a larger --budget resumes from them") from None
            chunk_meta = {"chunk": i, "seconds": time.perf_counter() - t0}
            if hasattr(oracle, "cost_summary"):  # CKKS: bytes each way, evaluations, seconds per party
                chunk_meta["oracle_costs"] = oracle.cost_summary()
            del oracle
            part = Fingerprints(res.eps, res.censored, res.queries, indices[s:e].clone(), chunk_meta)
            part.save(work / f"chunk-{i:05d}.safetensors")
            parts[i] = part
            used += res.total_queries
            bar.update(e - s)
            bar.set_postfix(q_per_img=f"{used / max(1, bar.n):.0f}")
    finally:
        bar.close()

    result = Fingerprints.concat(parts, meta)
    # Compute time summed over chunks, so it survives interruptions and resumes.
    result.meta.update({"queries_total": int(result.queries.sum()),
                        "censored_fraction": float(result.censored.float().mean()),
                        "compute_seconds": _total_seconds(parts)})
    costs = _total_costs(parts)
    if costs:
        result.meta["oracle_costs"] = costs
    result.save(out)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _total_seconds(parts: list[Fingerprints]) -> float | None:
    """Sum of per-chunk compute seconds, or None when a chunk did not record its time."""
    seconds = [p.meta.get("seconds") for p in parts]
    return None if any(s is None for s in seconds) else round(sum(seconds), 1)


def _total_costs(parts: list[Fingerprints]) -> dict[str, Any]:
    """Oracle cost counters summed over chunks (empty for oracles that keep none)."""
    total: dict[str, Any] = {}
    for p in parts:
        for key, value in (p.meta.get("oracle_costs") or {}).items():
            if key == "slots":
                total[key] = value
            elif isinstance(value, (int, float)) and key != "slot_utilisation":
                total[key] = total.get(key, 0) + value
    if total.get("evaluations") and total.get("slots"):
        total["slot_utilisation"] = total["slots_used"] / (total["evaluations"] * total["slots"])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in total.items()}


def _job_keys(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a finished file's metadata that describes the job (not its outcome)."""
    outcome = {"queries_total", "censored_fraction", "compute_seconds", "oracle_costs"}
    return {k: v for k, v in meta.items() if k not in outcome}


def _comparable(meta: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != "hesig_version"}, sort_keys=True, default=str)

