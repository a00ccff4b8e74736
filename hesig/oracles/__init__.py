"""Oracles: the only code that holds secrets. The attack side sees `same_label` bits and counters."""

from .base import Oracle
from .plaintext import PlaintextOracle
from ..core.runtime import default_device

__all__ = ["Oracle", "PlaintextOracle", "default_device"]
