"""The one run store: a pinned configuration, atomic checksummed artifacts, resume, refusal.

Every long job (fingerprinting, rMLE, the vicious runs, the direction study, the demo) keeps its
state in a :class:`RunStore` folder::

    <root>/run.json                 {"kind", "config", "hesig_version"}: pinned on first use
    <root>/<name>.safetensors       tensor artifacts (chunks); metadata carries a SHA-256 of the tensors
    <root>/steps/<name>.json        the JSON record of a finished step

Rules:

* A store opened with another ``kind`` or ``config`` than the one pinned is refused with one line
  (never mixed): "choose another --out or delete the folder".
* Every write is atomic (temp file + rename), so a kill loses at most the artifact in flight.
* A tensor artifact whose checksum does not match (a flipped bit, a foreign file) or that has
  none is reported, deleted and recomputed, never used.
* :meth:`RunStore.chunks` hands the chunks that are missing to an executor
  (:mod:`hesig.jobs.executor`) and saves each result as it arrives; :meth:`RunStore.step` runs a
  function once and memoises its JSON record; :meth:`RunStore.compute_steps` does the same for
  independent steps (a study's cells) on an executor.
* Only the process that owns the store writes: an executor's workers return results, never files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .. import __version__
from ..core.errors import CheckpointError, HesigError, MismatchError
from ..core.io import atomic_write_json, canonical_json, ensure_writable_dir, load_tensors, save_tensors
from .executor import Executor, InProcessExecutor

MANIFEST = "run.json"

Tensors = dict[str, torch.Tensor]
#: What a step computed on an executor returns: its JSON record, and tensor files to save beside it.
StepResult = tuple[dict[str, Any], dict[str, tuple[Tensors, dict[str, Any]]]]


class RunStore:
    """A run folder for one job configuration.

    root: the folder (created). kind: what job it belongs to ("fingerprint", "demo", ...).
    config: JSON-serialisable configuration; a store holding another is refused.
    replace: discard a store that holds another configuration (``--force``) instead of refusing.
    log: where notices go (a recomputed corrupt chunk); default: nowhere.
    """

    def __init__(self, root: str | Path, kind: str, config: dict[str, Any], *, replace: bool = False,
                 log: Callable[[str], None] = lambda message: None):
        if replace and Path(root, MANIFEST).exists():
            try:
                RunStore(root, kind, config)
            except HesigError:
                shutil.rmtree(root)  # --force: another job's state is discarded deliberately
        self.root = ensure_writable_dir(root)
        self.kind, self.config, self.log = kind, json.loads(canonical_json(config)), log
        manifest = self.root / MANIFEST
        if manifest.exists():
            try:
                pinned = json.loads(manifest.read_text())
            except (OSError, ValueError):
                raise CheckpointError(f"{manifest} is unreadable; delete {self.root} to start this job afresh") from None
            if not isinstance(pinned, dict) or pinned.get("kind") != kind:
                raise MismatchError(f"{self.root} holds a {pinned.get('kind') if isinstance(pinned, dict) else 'foreign'} "
                                    f"run, not a {kind} run; choose another --out")
            if canonical_json(pinned.get("config")) != canonical_json(self.config):
                changed = sorted(k for k in set(self.config) | set(pinned.get("config") or {})
                                 if canonical_json(self.config.get(k)) != canonical_json((pinned.get("config") or {}).get(k)))
                raise MismatchError(f"{self.root} holds a {kind} run with another configuration "
                                    f"({', '.join(changed[:4])} differ); choose another --out or delete it")
        else:
            atomic_write_json(manifest, {"kind": kind, "config": self.config, "hesig_version": __version__})

    # -- tensor artifacts -----------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def save(self, name: str, tensors: Tensors, meta: dict[str, Any]) -> Path:
        """Write a tensor artifact atomically (with the checksum of its tensors in its metadata)."""
        return save_tensors(self.path(name), tensors, meta)

    def load(self, name: str) -> tuple[Tensors, dict[str, Any]] | None:
        """The artifact, or None when it is missing or fails its checksum (then it is deleted and reported)."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            tensors, meta = load_tensors(path, what=f"{self.kind} chunk", require_checksum=True)
        except HesigError as exc:
            self.log(f"warning: {exc}; recomputing it")
            path.unlink(missing_ok=True)
            return None
        return tensors, meta

    def chunks(self, names: Sequence[str], compute: Callable[[int], tuple[Tensors, dict[str, Any]]], *,
               executor: Executor | None = None, check: Callable[[int, Tensors], str | None] | None = None,
               on_loaded: Callable[[int, Tensors, dict[str, Any]], None] | None = None,
               on_saved: Callable[[int, Tensors, dict[str, Any]], None] | None = None) -> list[tuple[Tensors, dict]]:
        """All chunks ``names[i]``, computing the missing ones with ``compute(i)`` on ``executor``.

        ``check(i, tensors)`` returns what is wrong with a chunk found on disk (a shape that does
        not fit this job), or None; such a chunk is reported, deleted and recomputed like a
        corrupt one. ``on_loaded`` sees every chunk found on disk (before any computing),
        ``on_saved`` every chunk as soon as it is saved. Returns the chunks in order.
        """
        parts: list[tuple[Tensors, dict] | None] = [None] * len(names)
        for i, name in enumerate(names):
            parts[i] = self.load(name)
            problem = check(i, parts[i][0]) if parts[i] is not None and check is not None else None
            if problem is not None:
                self.log(f"warning: {self.path(name)} {problem}; recomputing it")
                self.path(name).unlink(missing_ok=True)
                parts[i] = None
            if parts[i] is not None and on_loaded is not None:
                on_loaded(i, *parts[i])
        missing = [i for i, part in enumerate(parts) if part is None]
        for i, (tensors, meta) in (executor or InProcessExecutor()).map(compute, missing):
            self.save(names[i], tensors, meta)
            parts[i] = (tensors, meta)
            if on_saved is not None:
                on_saved(i, tensors, meta)
        return parts  # type: ignore[return-value]

    # -- JSON steps -------------------------------------------------------------------------------
    def step_path(self, name: str) -> Path:
        return self.root / "steps" / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.step_record(name) is not None

    def step_record(self, name: str) -> dict[str, Any] | None:
        path = self.step_path(name)
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError):
            return None  # written atomically, so only a tampered file: recompute

    def step(self, name: str, make: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Run ``make`` once; return (its JSON record, whether it was reused)."""
        record = self.step_record(name)
        if record is not None:
            return record, True
        record = make()
        atomic_write_json(self.step_path(name), record)
        return json.loads(canonical_json(record)), False

    def compute_steps(self, names: Sequence[str], compute: Callable[[int], StepResult], *,
                      executor: Executor | None = None,
                      on_saved: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """The JSON records of the independent steps ``names[i]``, computing the missing ones with
        ``compute(i)`` on ``executor``; returns them in order.

        ``compute(i)`` returns ``(record, files)``: ``files`` maps a path relative to the store's
        root to ``(tensors, meta)`` (a cell's sample reconstructions). This process writes them,
        then the record, so a step whose record exists has its files. ``on_saved(i, record)`` sees
        each step as soon as it is saved (a progress line).
        """
        records: list[dict[str, Any] | None] = [self.step_record(name) for name in names]
        missing = [i for i, record in enumerate(records) if record is None]
        for i, (record, files) in (executor or InProcessExecutor()).map(compute, missing):
            for relative, (tensors, meta) in files.items():
                save_tensors(self._inside(relative), tensors, meta)
            atomic_write_json(self.step_path(names[i]), record)
            records[i] = json.loads(canonical_json(record))
            if on_saved is not None:
                on_saved(i, records[i])
        return records  # type: ignore[return-value]

    def _inside(self, relative: str) -> Path:
        """``root / relative``, refused if it leaves the root (a step names its own files)."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise MismatchError(f"a step's file '{relative}' is outside the run folder {self.root}")
        ensure_writable_dir(path.parent)
        return path

    def steps(self, prefix: str = "") -> Iterable[dict[str, Any]]:
        """The records of finished steps whose names start with ``prefix``, in name order."""
        folder = self.root / "steps"
        for path in sorted(folder.glob(f"{prefix}*.json")) if folder.exists() else []:
            try:
                yield json.loads(path.read_text())
            except (OSError, ValueError):
                continue

    def remove(self) -> None:
        """Delete the folder (a job whose final artifact now holds everything)."""
        shutil.rmtree(self.root, ignore_errors=True)
