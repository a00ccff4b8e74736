"""He et al. (ACSAC 2019): white-box rMLE, black-box inverse network, query-free shadow model."""

from .inverse_network import InverseNetwork, inverse_architecture
from .rmle import RMLE, total_variation
from .shadow import ShadowModel, shadow_architecture

__all__ = ["RMLE", "total_variation", "InverseNetwork", "inverse_architecture", "ShadowModel", "shadow_architecture"]
