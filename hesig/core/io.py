"""Atomic file output, content hashes and safe tensor containers.

Everything hesig writes goes through :func:`atomic_write_bytes` (write to a temporary file in
the same directory, fsync, ``os.replace``), so a killed job never leaves a half-written file
behind. Tensors are stored with safetensors and JSON metadata; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError, OutputError

#: Key in the safetensors header under which hesig stores its JSON metadata.
META_KEY = "hesig"
#: Metadata key of the SHA-256 over a file's tensors, written by every save and checked by every load.
CHECKSUM_KEY = "sha256"


def _file_mode() -> int:
    """0666 less the process umask (normally 0644): what ``open()`` would give a new file.
    mkstemp creates 0600 files, and the rename would keep that mode."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``) with the user's umask; create parents."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """JSON text for comparing configurations and job identities: sorted keys, tuples as lists."""
    return json.dumps(obj, sort_keys=True, default=str)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) or raise a one-line :class:`OutputError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


def tensor_hash(*tensors: torch.Tensor, length: int = 16) -> str:
    """SHA-256 over the raw bytes, dtypes and shapes of ``tensors``; first ``length`` hex digits."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:length]


def state_dict_hash(state: Mapping[str, torch.Tensor], length: int = 16) -> str:
    """Content hash of a state dict, independent of insertion order."""
    return tensor_hash(*[state[k] for k in sorted(state)], length=length)


#: Metadata that differs between two runs of the same seeded job (wall time, where it ran, local
#: paths). It goes into the JSON beside a checkpoint, never into the checkpoint itself, so the
#: same seed gives byte-identical checkpoint files.
VOLATILE_KEYS = ("train_seconds", "device", "seconds", "step_seconds", "trained_on")


def stable(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without :data:`VOLATILE_KEYS` (what a checkpoint's header records)."""
    return {k: v for k, v in meta.items() if k not in VOLATILE_KEYS}


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """Full SHA-256 over the tensors' names, dtypes, shapes and bytes (independent of insertion order)."""
    names = sorted(tensors)
    return f"{tensor_hash(*[tensors[n] for n in names], length=64)}:{','.join(names)}"


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Save ``tensors`` plus JSON ``meta`` as one safetensors file, atomically, with the tensors'
    checksum in the metadata (so a flipped bit is caught on load)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**meta, CHECKSUM_KEY: tensors_checksum(tensors)}
    blob = st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True, default=_json_default)})
    return atomic_write_bytes(path, blob)


def load_tensors(path: str | os.PathLike, what: str = "file", *,
                 require_checksum: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`. Corrupt or foreign files, and files whose
    tensors fail their recorded checksum, raise CheckpointError (files older than the checksum
    carry none and are checked only by the hashes their own kind records)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get(META_KEY, "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or not a hesig file ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what} {path} has no hesig metadata")
    recorded = meta.pop(CHECKSUM_KEY, None)
    if recorded is None and require_checksum:
        raise CheckpointError(f"{what} {path} carries no checksum (written by an older hesig)")
    if recorded is not None and recorded != tensors_checksum(tensors):
        raise CheckpointError(f"{what} {path} is corrupt: its tensors fail their SHA-256 checksum")
    return tensors, meta
