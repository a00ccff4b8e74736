"""Fingerprint files E_x: the format (the job that computes them is :mod:`hesig.jobs.fingerprint`).

A fingerprint file (safetensors, never pickled) holds, for n inputs and k directions:

* ``eps``      float32 [n, k]: minimal flipping ε (L2 units); +inf where censored.
* ``censored`` bool    [n, k]: no flip found in (0, ε_max].
* ``queries``  int32   [n, k]: oracle queries spent per pair.
* ``indices``  int64   [n]:    positions of the inputs in their dataset split.

and metadata: dataset, split, split_hash, model_hash, arch, directions_hash, oracle, the search
parameters, seed and package version. Consumers check ``model_hash`` / ``directions_hash``
before mixing files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, HesigError, InvalidValueError, MismatchError
from ..core.defaults import DATASETS, EPS_MAX_LIMIT, PRIVATE_IMAGES, SPLITS
from ..core.io import load_tensors, save_tensors
from ..core.validate import check_field, is_choice, is_number

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
        if (self.queries < 0).any():
            raise InvalidValueError("fingerprints contain negative query counts")
        if n and int(self.indices.min()) < 0:
            raise InvalidValueError(f"fingerprints hold a negative dataset index ({int(self.indices.min())})")
        if self.indices.unique().numel() != n:
            raise InvalidValueError("fingerprints hold the same dataset index twice")

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

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored form: eps float32, censored uint8, queries int32, indices int64."""
        return {"eps": self.eps, "censored": self.censored.to(torch.uint8), "queries": self.queries,
                "indices": self.indices}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], what: str = "fingerprints") -> "Fingerprints":
        missing = {"eps", "censored", "queries", "indices"} - set(tensors)
        if missing:
            raise CheckpointError(f"{what} is not a fingerprint file (missing {', '.join(sorted(missing))})")
        try:
            return cls(tensors["eps"].float(), tensors["censored"].bool(), tensors["queries"].int(),
                       tensors["indices"].long(), meta)
        except HesigError as exc:
            raise type(exc)(f"{what}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, self.tensors(), self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "Fingerprints":
        """Load and validate a fingerprint file (tensors, checksum, and every metadata field consumers use)."""
        tensors, meta = load_tensors(path, what="fingerprint file")
        private = (meta.get("dataset"), meta.get("split")) == PRIVATE_IMAGES  # a victim's own images (hesig victim)
        if not private:
            check_field(meta, "dataset", path, f"one of {', '.join(DATASETS)}", lambda v: is_choice(v, DATASETS))
            check_field(meta, "split", path, "train or test", lambda v: is_choice(v, SPLITS))
        for key in IDENTITY_KEYS:
            check_field(meta, key, path, "a hash string", lambda v: isinstance(v, str) and 0 < len(v) <= 128)
        search = check_field(meta, "search", path, "a JSON object with eps_max", lambda v: isinstance(v, dict))
        check_field(search, "eps_max", path, f"a number in (0, {EPS_MAX_LIMIT:g}]",
                    lambda v: is_number(v, 0, EPS_MAX_LIMIT) and v > 0)
        return cls.from_tensors(tensors, meta, what=str(path))

    @classmethod
    def concat(cls, parts: list["Fingerprints"], meta: dict[str, Any]) -> "Fingerprints":
        return cls(torch.cat([p.eps for p in parts]), torch.cat([p.censored for p in parts]),
                   torch.cat([p.queries for p in parts]), torch.cat([p.indices for p in parts]), meta)
