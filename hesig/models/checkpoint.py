"""Model checkpoints: ``model.safetensors`` (weights + metadata in its header) and ``model.json``.

Loading never unpickles: safetensors holds only raw tensors. The metadata records the arch, input
shape and class count needed to rebuild the module, and a content hash of the weights that every
downstream artifact (directions, fingerprints, decoders) carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..core.errors import CheckpointError, HesigError
from ..core.io import atomic_write_json, load_tensors, save_tensors, stable, state_dict_hash
from ..core.validate import check_field, is_choice, is_int, is_shape
from .architectures import ARCHITECTURES, build_model

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass
class LoadedModel:
    model: nn.Sequential
    meta: dict[str, Any]

    @property
    def hash(self) -> str:
        return self.meta["model_hash"]

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["in_shape"])


def model_hash(model: nn.Module) -> str:
    return state_dict_hash(model.state_dict())


def save_model(model: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write weights and metadata into ``out_dir``; ``meta`` must hold arch, in_shape, num_classes."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {**meta, "model_hash": state_dict_hash(state), "hesig_version": __version__}
    save_tensors(out_dir / WEIGHTS_FILE, state, stable(meta))  # timings only in model.json: same seed, same bytes
    atomic_write_json(out_dir / META_FILE, meta)
    return out_dir


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory (or its ``model.safetensors``) in eval mode on ``device``."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    state, meta = load_tensors(weights, what="model checkpoint")
    check_field(meta, "arch", weights, f"one of {', '.join(ARCHITECTURES)}", lambda v: is_choice(v, ARCHITECTURES))
    check_field(meta, "in_shape", weights, "[C, H, W] of positive integers", is_shape)
    check_field(meta, "num_classes", weights, "an integer >= 2", lambda v: is_int(v, 2, 100_000))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"model checkpoint {weights} holds NaN or infinite weights (in {bad[0]})")
    try:
        model = build_model(meta["arch"], meta["in_shape"], meta["num_classes"])
        model.load_state_dict(state, strict=True)
    except (RuntimeError, HesigError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"model checkpoint {weights} does not fit arch '{meta['arch']}': {first}") from None
    actual = state_dict_hash(state)
    if meta.get("model_hash") != actual:
        raise CheckpointError(f"model checkpoint {weights} is corrupt: weights hash {actual} != recorded {meta.get('model_hash')}")
    return LoadedModel(model.to(device).eval(), meta)
