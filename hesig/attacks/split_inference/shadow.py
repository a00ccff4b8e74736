"""Query-free model inversion through a shadow edge model (He et al., ACSAC 2019, Algorithm 3).

Threat model: the untrusted party holds the cloud part f_θ2 (its own layers) and a labelled set S
from the training distribution, but can neither see nor query the edge part f_θ1. It trains a
shadow g so that the composition classifies S:

    f'_θ1 = argmin_g (1/m) Σ_i CrossEntropy(f_θ2(g(x_i)), y_i)                   (eq. 6)

with f_θ2 frozen, then runs white-box rMLE (Algorithm 1) on g against the observed v0 = f_θ1(x0).
Knowledge: :class:`ShadowKnowledge`; observation: v0 [n, ...]. No queries.

Structures (``structure``), the adversary's knowledge of the edge architecture:

* ``same`` -- the edge's own layer list, freshly initialised (the adversary knows the
  structure, not the weights).
* ``different`` -- every k x k convolution (k >= 4) replaced by a (k-2) x (k-2) and a 3 x 3
  convolution (same receptive field and output size), every Linear(a->b) by Linear(a->b),
  Linear(b->b); no nonlinearity is inserted, so the shadow computes the same kind of function as
  the edge (their public code, ``LeNetAlternativeconv1``: two 3 x 3 convolutions and nothing
  between; a ReLU between them, which hesig used before, throws away what rMLE must invert).
  For LeNet-5 this is He et al.'s Table 5: conv1 (one 5x5) -> two 3x3 layers; ReLU2 (two 5x5) ->
  four 3x3 layers. Their code's ReLU2 shadow (``LeNetAlternativeReLU2Archi2``) also drops ReLU1
  and widens the first pair to 8 -> 16 channels; Table 5 states neither, and hesig keeps the
  edge's own nonlinearities and widths.

  The CIFAR-10 target (``cifar_cnn``, all 3 x 3 same-padded convolutions) has nothing that rule
  can restructure; its ``different`` shadows are Table 5's CIFAR rows (:func:`_cifar_table5_shadow`):
  conv11 (one 3x3, 64 filters) -> a 3x3 layer of 16 filters and a 3x3 layer of 64; ReLU22 (two
  3x3 64-filter and two 3x3 128-filter layers) -> a 5x5 layer and a 5x5 layer of 128 filters,
  with the edge's ReLU and 2x2 pooling between (Table 5 gives neither the first layer's width, 64
  here, nor where the pooling goes); ReLU32, which Table 5 leaves out, continues the pattern with
  pooling and a third 5x5 layer of 128 filters.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .._checks import check_training
from ..base import Attack, ShadowKnowledge, WhiteBoxEdge
from ...core.defaults import SHADOW_STRUCTURES as STRUCTURES
from ...core.defaults import SHADOW_TRAINING
from ...core.errors import InvalidValueError, ShapeError
from ...models.training import train_epochs
from .rmle import RMLE


def _reset(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def _cifar_table5_shadow(edge: nn.Sequential) -> nn.Sequential:
    """He et al.'s Table 5 shadow of a ``cifar_cnn`` edge cut at conv11, ReLU22 or ReLU32 (module doc)."""
    split = list(dict(edge.named_children()))[-1]
    c_in = edge.conv11.in_channels
    if split == "conv11":
        width = edge.conv11.out_channels
        return nn.Sequential(OrderedDict([("conv_a", nn.Conv2d(c_in, 16, 3, padding=1)),
                                          ("conv_b", nn.Conv2d(16, width, 3, padding=1))]))
    if split not in ("ReLU22", "ReLU32"):
        raise InvalidValueError(f"structure 'different' for the CIFAR-10 network is He et al.'s Table 5, defined for "
                                f"the splits conv11, ReLU22 and ReLU32, not {split}")
    layers = [("conv_a", nn.Conv2d(c_in, 64, 5, padding=2)), ("relu_a", nn.ReLU()), ("pool_a", nn.MaxPool2d(2)),
              ("conv_b", nn.Conv2d(64, edge.conv22.out_channels, 5, padding=2)), ("relu_b", nn.ReLU())]
    if split == "ReLU32":
        layers += [("pool_b", nn.MaxPool2d(2)),
                   ("conv_c", nn.Conv2d(edge.conv22.out_channels, edge.conv32.out_channels, 5, padding=2)),
                   ("relu_c", nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


def shadow_architecture(edge: nn.Sequential, structure: str = "same") -> nn.Sequential:
    """An untrained shadow of ``edge`` (see module doc); its output shape equals the edge's."""
    if structure not in STRUCTURES:
        raise InvalidValueError(f"unknown shadow structure {structure!r} (choose from {', '.join(STRUCTURES)})")
    if structure == "same":
        shadow = copy.deepcopy(edge)
        shadow.apply(_reset)
        return shadow
    if hasattr(edge, "conv11"):  # the cifar_cnn edge (its layer names): Table 5's CIFAR rows
        return _cifar_table5_shadow(edge)
    layers: list[nn.Module] = []
    changed = False
    for layer in edge.children():
        if isinstance(layer, nn.Conv2d) and min(layer.kernel_size) >= 4 and layer.stride == (1, 1) \
                and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1:
            k = layer.kernel_size
            layers += [nn.Conv2d(layer.in_channels, layer.out_channels, (k[0] - 2, k[1] - 2)),
                       nn.Conv2d(layer.out_channels, layer.out_channels, 3)]
            changed = True
        elif isinstance(layer, nn.Linear):
            layers += [nn.Linear(layer.in_features, layer.out_features),
                       nn.Linear(layer.out_features, layer.out_features)]
            changed = True
        else:
            fresh = copy.deepcopy(layer)
            fresh.apply(_reset)
            layers.append(fresh)
    if not changed:
        raise InvalidValueError("structure 'different' needs an unpadded stride-1 convolution with kernel >= 4 or a "
                                "Linear layer in the edge to restructure; this edge has none")
    return nn.Sequential(*layers)


class ShadowModel(Attack):
    """Train a shadow edge through the frozen cloud (eq. 6), then invert with rMLE on it.

    structure: ``same`` or ``different`` (module doc). epochs, batch_size, lr: Adam on eq. 6.
    seed: weight init and batch order. rmle: the white-box attack run on the shadow (default
    :class:`RMLE` with its defaults). After :meth:`fit`, ``shadow`` is the trained shadow (eval
    mode) and ``training`` holds ``{"structure", "epochs", "seconds", "train_loss", "train_accuracy"}``.
    """

    knowledge = ShadowKnowledge
    name = "shadow model"

    def __init__(self, *, structure: str = "same", epochs: int = SHADOW_TRAINING["epochs"],
                 batch_size: int = SHADOW_TRAINING["batch_size"], lr: float = SHADOW_TRAINING["lr"], seed: int = 0,
                 rmle: RMLE | None = None, device: str | torch.device = "cpu", progress: bool = False):
        if structure not in STRUCTURES:
            raise InvalidValueError(f"unknown shadow structure {structure!r} (choose from {', '.join(STRUCTURES)})")
        check_training(epochs, batch_size, lr)
        self.structure, self.epochs, self.batch_size, self.lr = structure, int(epochs), int(batch_size), float(lr)
        self.seed, self.device, self.progress = int(seed), torch.device(device), progress
        self.rmle = rmle if rmle is not None else RMLE()
        self.shadow: nn.Sequential | None = None
        self.training: dict[str, Any] = {}

    def _fit(self, knowledge: ShadowKnowledge, trained: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
             ) -> None:
        """Train the shadow, or -- ``trained`` = (its state dict, its ``training`` record), a resumed
        job -- rebuild it from the template without training; then fit rMLE on it."""
        if trained is None:
            self.shadow, self.training = self._train(knowledge)
        else:
            self.shadow = shadow_architecture(knowledge.edge_template, self.structure)
            self.shadow.load_state_dict(trained[0])
            self.shadow.to(self.device).eval()
            self.training = trained[1]
        self.rmle.fit(WhiteBoxEdge(self.shadow, tuple(knowledge.images.shape[1:])))

    def _train(self, knowledge: ShadowKnowledge) -> tuple[nn.Sequential, dict[str, Any]]:
        images, labels = knowledge.images, knowledge.labels
        torch.manual_seed(self.seed)
        shadow = shadow_architecture(knowledge.edge_template, self.structure).to(self.device)
        cloud = knowledge.cloud.to(self.device).eval()
        with torch.no_grad():
            try:
                cloud(shadow(images[:1].to(self.device)))
            except RuntimeError as exc:
                raise ShapeError(f"the shadow's output does not fit the cloud part: {str(exc).splitlines()[0]}") from None
        frozen = [(p, p.requires_grad) for p in cloud.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        opt = torch.optim.Adam(shadow.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.CrossEntropyLoss()
        m, history, total, correct = images.shape[0], [], 0.0, 0

        def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
            nonlocal total, correct
            x, y = images[idx].to(self.device), labels[idx].to(self.device)
            logits = cloud(shadow(x))
            loss = loss_fn(logits, y)
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            return loss

        t0 = time.perf_counter()
        try:
            for epoch in train_epochs([opt], loss_of_batch, m, batch_size=self.batch_size, epochs=self.epochs,
                                      generator=gen, modules=[shadow], desc=f"shadow ({self.structure})",
                                      progress=self.progress):
                history.append(total / m)
                accuracy, total, correct = correct / m, 0.0, 0  # the last epoch's is reported
                epoch.show(loss=f"{history[-1]:.3f}")
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
        return shadow.eval(), {"structure": self.structure, "epochs": self.epochs, "seconds": time.perf_counter() - t0,
                               "train_loss": history, "train_accuracy": accuracy}

    def _reconstruct(self, observed: torch.Tensor, initial: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, Any]]:
        """rMLE on the shadow against v0 [n, ...]; ``initial`` as in :meth:`RMLE.reconstruct`."""
        result = self.rmle.reconstruct(observed, initial=initial)
        return result.images, {**result.details, "shadow_training": self.training}
