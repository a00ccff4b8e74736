"""Decoder checkpoints: weights + feature statistics in safetensors, identity in JSON metadata.

The metadata pins the model hash and directions hash of the training fingerprints; a decoder
refuses fingerprints made with another model or another direction set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ... import __version__
from ...core.defaults import DECODER_MLP_WIDTH
from ...core.errors import CheckpointError, InvalidValueError
from ..fingerprints import Fingerprints
from ...core.io import atomic_write_json, load_tensors, save_tensors, stable
from ...models.dcgan import DCGANDecoder
from .features import FEATURE_KINDS, FingerprintFeatures
from .train import decode

WEIGHTS_FILE = "decoder.safetensors"
META_FILE = "decoder.json"


@dataclass
class FingerprintDecoder:
    """A trained decoder with its preprocessing: ``reconstruct(fingerprints) -> images``."""

    network: DCGANDecoder
    features: FingerprintFeatures
    meta: dict[str, Any]

    def reconstruct(self, fp: Fingerprints) -> torch.Tensor:
        """Images float32 [n, C, H, W] in [0, 1] from fingerprints; refuses foreign fingerprints."""
        fp.check_compatible(self.meta, what="this decoder")
        if fp.num_directions != self.features.mean.numel():
            raise CheckpointError(f"fingerprints have {fp.num_directions} directions, the decoder {self.features.mean.numel()}")
        return decode(self.network, self.features.transform(fp.eps, fp.censored))

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        tensors = {f"net.{k}": v for k, v in self.network.state_dict().items()}
        tensors.update({"features.mean": self.features.mean, "features.std": self.features.std})
        if self.features.table is not None:  # the rank encoding's training quantiles
            tensors["features.table"] = self.features.table
        meta = {**self.meta, "in_features": self.network.in_features, "out_shape": list(self.network.out_shape),
                "ngf": self.network.ngf, "eps_max": self.features.eps_max, "hesig_version": __version__}
        if self.features.kind != "log":  # only when set: log-feature checkpoints keep their bytes
            meta["features"] = self.features.kind
        if self.network.mlp:  # likewise: the paper's generator keeps its bytes
            meta.update(mlp=self.network.mlp, mlp_width=self.network.mlp_width)
        if self.network.res:
            meta["res"] = self.network.res
        save_tensors(out_dir / WEIGHTS_FILE, tensors, stable(meta))  # timings only in the JSON: same seed, same bytes
        atomic_write_json(out_dir / META_FILE, meta)
        return out_dir

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FingerprintDecoder":
        path = Path(path)
        weights = path / WEIGHTS_FILE if path.is_dir() else path
        tensors, meta = load_tensors(weights, what="decoder checkpoint")
        try:
            net = DCGANDecoder(meta["in_features"], tuple(meta["out_shape"]), meta["ngf"], mlp=meta.get("mlp", 0),
                               mlp_width=meta.get("mlp_width", DECODER_MLP_WIDTH), res=meta.get("res", 0))
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
            kind = meta.get("features", "log")
            if kind not in FEATURE_KINDS or (kind == "rank") != ("features.table" in tensors):
                raise CheckpointError(f"decoder checkpoint {weights}: its features ({kind!r}) do not match its tensors")
            table = tensors.get("features.table")
            if table is not None and (table.ndim != 2 or table.shape[0] != tensors["features.mean"].numel()
                                      or not torch.isfinite(table).all() or (table[:, 1:] < table[:, :-1]).any()):
                raise CheckpointError(f"decoder checkpoint {weights}: its rank table is not a sorted [directions, T] table")
            feats = FingerprintFeatures(tensors["features.mean"], tensors["features.std"], float(meta["eps_max"]),
                                        None if table is None else table.float().contiguous())
        except (KeyError, RuntimeError, TypeError, ValueError, InvalidValueError) as exc:
            raise CheckpointError(f"decoder checkpoint {weights} is incomplete or of another shape ({type(exc).__name__})") from None
        return cls(net.to(device).eval(), feats, meta)
