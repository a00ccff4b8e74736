"""Outputs never destroy inputs: the check every command runs before it writes.

A command names the files it will write, the kind of artifact it makes, its job identity (what
must match for a rerun to be the same job) and its inputs. :func:`guard_output` refuses, in one
line, an output that is one of the command's inputs (or inside one), an existing artifact of
another kind, a file hesig did not write, or an existing artifact of the same kind made by a
different job. ``force=True`` (the CLI's ``--force``) replaces deliberately; it never allows
writing over the command's own inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .errors import OutputError
from .io import META_KEY, canonical_json

#: Metadata key naming what a file is ("model", "decoder", "directions", "fingerprints", ...).
KIND_KEY = "artifact"
#: Metadata key holding the identity of the job that made a file (the settings a rerun must share).
JOB_KEY = "job"


def identity(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """The two metadata fields a job writes into its artifact so :func:`guard_output` can recognise it."""
    return {KIND_KEY: kind, JOB_KEY: json.loads(canonical_json(job))}


def read_identity(path: Path) -> tuple[str, dict[str, Any]]:
    """(kind, metadata) of an existing output file; kind "foreign" for a file hesig did not write."""
    try:
        if path.suffix == ".json":
            meta = json.loads(path.read_text())
        else:
            data = path.read_bytes()
            header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
            meta = json.loads(header["__metadata__"][META_KEY])
        if not isinstance(meta, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError):
        return "foreign", {}
    return str(meta.get(KIND_KEY) or _older_kind(meta)), meta


def _older_kind(meta: dict[str, Any]) -> str:
    """Kinds of files written before they carried a kind."""
    if "directions_hash" in meta and "family" in meta:
        return "directions"
    if "search" in meta and "directions_hash" in meta:
        return "fingerprints"
    if "model_hash" in meta and "arch" in meta and "in_shape" in meta:
        return "model"
    if "in_features" in meta and "eps_max" in meta:
        return "decoder"
    return "unknown hesig file"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_inside_inputs(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is, or lies inside, one of the inputs (or holds one)."""
    out = Path(out).resolve()
    for source in (Path(p).resolve() for p in inputs if p is not None):
        if _inside(out, source) or _inside(source, out):
            raise OutputError(f"--out {out} is (inside) or holds this command's input {source}: "
                              "outputs never replace inputs")


def guard_output(primary: str | Path, kind: str, job: dict[str, Any], *, inputs: Iterable[str | Path | None] = (),
                 also_writes: Iterable[str | Path] = (), force: bool = False) -> None:
    """Refuse (OutputError, one line) to write ``primary`` (plus ``also_writes``) when that would
    destroy an input or another job's artifact; see the module docstring.

    job: what identifies the job (written into artifacts with :func:`identity`); an existing
    artifact of the same kind with the same job identity is this job's (rerunning is harmless).
    """
    primary = Path(primary).resolve()
    outputs = [primary, *(Path(p).resolve() for p in also_writes)]
    for source in (Path(p).resolve() for p in inputs if p is not None):
        for out in outputs:
            if _inside(out, source) or (source.is_dir() and out.is_dir() and _inside(source, out)):
                raise OutputError(f"--out {out} is (inside) this command's input {source}: outputs never replace inputs")
    if primary.is_dir():
        raise OutputError(f"--out {primary} is a folder; name a file")
    if not primary.exists() or force:
        return
    found, meta = read_identity(primary)
    if found != kind:
        what = "a file hesig did not write" if found == "foreign" else f"a {found} artifact"
        raise OutputError(f"{primary} holds {what}, not a {kind} artifact; "
                          "choose another --out (or --force to replace it)")
    recorded = meta.get(JOB_KEY) if isinstance(meta.get(JOB_KEY), dict) else {}
    differ = sorted(k for k in set(job) | set(recorded) if canonical_json(recorded.get(k)) != canonical_json(job.get(k)))
    if differ:
        raise OutputError(f"{primary} holds a {kind} artifact made by another job ({', '.join(differ[:3])} differ); "
                          "choose another --out (or --force to replace it)")
