"""Sibling attacks in the same harness: He et al.'s collaborative-inference attacks."""

from .inverse_network import InverseNetwork, inverse_architecture
from .rmle import RMLE, total_variation
from .shadow_model import ShadowModel, shadow_architecture

__all__ = ["RMLE", "total_variation", "InverseNetwork", "inverse_architecture", "ShadowModel", "shadow_architecture"]
