"""The server's view of a victim across the network: an oracle channel over a :class:`VictimLink`.

:class:`RemoteVictim` implements hesig.oracles.ckks.channel.Victim by posting tasks to the
link and reading what the victim uploaded (spooled to disk, mapped read-only: a 374 MB input is
never copied into memory as a whole). :class:`RemoteFactory` is the fingerprint job's oracle
factory for one victim session: the job's "secrets" are the positions of the victim's declared
images, which the server never sees.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Callable, ContextManager

import torch

from ..core.defaults import CKKS_PROCESSES
from ..core.errors import MismatchError
from ..oracles.ckks import wire
from ..oracles.ckks.channel import EncryptedOracle
from ..oracles.ckks.params import CKKSParameters
from ..oracles.ckks.polymodel import PolyCNN
from .link import VictimLink

#: Times one row's upload may be refused (malformed, wrong context) before the session fails.
MAX_INPUT_REFUSALS = 5


class ContextStore:
    """The public contexts a session received (context id -> file), the latest few kept."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._paths: dict[str, Path] = {}

    def add(self, cid: str, path: Path) -> None:
        self._paths.pop(cid, None)
        self._paths[cid] = path
        while len(self._paths) > self.keep:
            old = self._paths.pop(next(iter(self._paths)))
            old.unlink(missing_ok=True)

    def read(self, cid: str) -> bytes | None:
        path = self._paths.get(cid)
        return None if path is None else path.read_bytes()

    def clear(self) -> None:
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        self._paths.clear()


class RemoteVictim:
    """positions [k]: the chunk's rows as positions in the victim's declared list; indices: that list."""

    def __init__(self, link: VictimLink, positions: list[int], indices: list[int], contexts: ContextStore):
        self.link, self.positions, self.indices, self.contexts = link, positions, indices, contexts
        self._mapped: tuple[object, mmap.mmap, Path] | None = None
        self._refusals: dict[int, int] = {}

    def input(self, row: int) -> tuple[bytes | None, object]:
        self._unmap()
        position = self.positions[row]
        path = self.link.request_input(position, self.indices[position])
        fh = open(path, "rb")
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            fh.close()
            mapped = b""
        self._mapped = (fh, mapped, path) if mapped != b"" else (None, None, path)
        try:
            cid = str(wire.read_header(mapped).get("context_id"))
        except MismatchError:
            cid = ""
        return self.contexts.read(cid), mapped

    def _unmap(self) -> None:
        if self._mapped is None:
            return
        fh, mapped, path = self._mapped
        self._mapped = None
        try:
            if mapped is not None:
                mapped.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with the last one
            pass
        if fh is not None:
            fh.close()
        path.unlink(missing_ok=True)

    def input_checked(self, row: int, error: str | None) -> bool:
        position = self.positions[row]
        self._unmap()
        if error is None:
            self.link.input_verdict(None)
            return False
        self._refusals[position] = self._refusals.get(position, 0) + 1
        retry = self._refusals[position] < MAX_INPUT_REFUSALS
        self.link.input_verdict(error if retry else f"{error} (refused {MAX_INPUT_REFUSALS} times: session ends)")
        return retry

    def answer(self, row: int, result: bytes) -> bytes:
        count = int(wire.read_header(result)["count"])
        return self.link.exchange(self.positions[row], result, count)

    def forget(self, row: int) -> None:
        self._unmap()

    def costs(self) -> dict:
        return {}


class RemoteFactory:
    """The fingerprint job's oracle factory for one remote victim; ``describe`` is fixed by the job."""

    def __init__(self, poly: PolyCNN, link: VictimLink, indices: list[int], contexts: ContextStore,
                 params: CKKSParameters, description: dict, gate: Callable[[], ContextManager], processes: int = CKKS_PROCESSES):
        self.poly, self.link, self.indices, self.contexts, self.processes = poly, link, indices, contexts, processes
        self.params, self.description, self.gate = params, description, gate
        self.counted: set[str] = set()

    def __call__(self, positions: torch.Tensor, budget: int | None) -> EncryptedOracle:
        victim = RemoteVictim(self.link, [int(p) for p in positions.tolist()], self.indices, self.contexts)
        return EncryptedOracle(self.poly, victim, len(victim.positions), params=self.params, budget=budget,
                               gate=self.gate, counted_contexts=self.counted, server_processes=self.processes)

    def describe(self) -> dict:
        return dict(self.description)


def spool_dir(runs: Path) -> Path:
    """Where uploads are spooled before the job reads them (cleared when the server starts)."""
    path = Path(runs) / ".uploads"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
