"""Cut a named ``nn.Sequential`` into an edge part and a cloud part at a layer name."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..core.errors import InvalidValueError


def layer_names(model: nn.Sequential) -> list[str]:
    return [name for name, _ in model.named_children()]


def split_model(model: nn.Sequential, layer: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Return (edge, cloud): edge runs up to and including ``layer``, cloud the rest."""
    names = layer_names(model)
    if layer not in names:
        raise InvalidValueError(f"model has no layer '{layer}' (layers: {', '.join(names)})")
    cut = names.index(layer) + 1
    children = list(model.named_children())
    return nn.Sequential(OrderedDict(children[:cut])), nn.Sequential(OrderedDict(children[cut:]))
