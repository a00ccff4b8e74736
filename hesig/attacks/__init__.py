"""Sibling attacks in the same harness: He et al.'s collaborative-inference attacks (rMLE, ...)."""

from .rmle import RMLE, total_variation

__all__ = ["RMLE", "total_variation"]
