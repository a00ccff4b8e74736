"""Oracle kinds: a name -> a lazy factory. Importable without torch or TenSEAL.

Adding an oracle kind (a remote service, another HE backend) is one module with a
``factory(target, **options) -> OracleFactory`` function plus one entry in :data:`KINDS`; jobs
never branch on oracle names. An :class:`OracleFactory` is what a job holds: ``describe()`` gives
the metadata the fingerprint file records about the oracle, and ``factory(secrets, budget)``
builds the oracle that holds one chunk of secrets.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.defaults import CHUNK_SIZE, ORACLES
from ..core.errors import InvalidValueError


class OracleFactory(Protocol):
    """Builds oracles over chunks of secrets for one job (one model, one set of options)."""

    def __call__(self, secrets: Any, budget: int | None) -> Any:
        """secrets: float32 [n, C, H, W] in [0, 1]; budget: queries this oracle may answer (None: no cap)."""

    def describe(self) -> dict[str, Any]:
        """JSON metadata about the oracle for the fingerprint file (parameters, layout, ...)."""


@dataclass(frozen=True)
class OracleKind:
    """name: as the CLI spells it. module / function: the lazy factory. options: the job options it
    takes (others are not passed). chunk_size: rows per resumable chunk by default."""

    name: str
    module: str
    function: str
    options: tuple[str, ...]
    chunk_size: int
    summary: str

    def factory(self, target: Any, **options: Any) -> OracleFactory:
        """Import the kind's module now (not at CLI start) and build its factory for ``target``
        (a :class:`hesig.models.LoadedModel`), passing only the options this kind takes."""
        build = getattr(importlib.import_module(self.module), self.function)
        return build(target, **{k: v for k, v in options.items() if k in self.options})


KINDS: dict[str, OracleKind] = {
    "plaintext": OracleKind("plaintext", "hesig.oracles.plaintext", "factory", ("device", "batch_size", "client_policy"),
                            CHUNK_SIZE["plaintext"], "the secrets inside the oracle object, next to the model"),
    "ckks": OracleKind("ckks", "hesig.oracles.ckks.oracle", "factory", ("layout", "encryption", "client_policy", "processes"), CHUNK_SIZE["ckks"],
                       "a TenSEAL CKKS client (secret key) and server (public context), bytes between them"),
}
assert tuple(KINDS) == ORACLES, "core.defaults.ORACLES must list the registry's kinds"


def oracle_kind(name: str) -> OracleKind:
    if name not in KINDS:
        raise InvalidValueError(f"unknown oracle '{name}' (choose from {', '.join(KINDS)})")
    return KINDS[name]
