"""Oracles: the only code that holds secrets. The attack side sees `same_label` bits and counters.

Names are imported lazily, so a CKKS helper process (hesig.oracles.ckks.helpers), which imports
this package first, starts without torch.
"""

from __future__ import annotations

import importlib

__all__ = ["Oracle", "PlaintextOracle", "default_device"]
_WHERE = {"Oracle": ".base", "PlaintextOracle": ".plaintext", "default_device": "..core.runtime"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
