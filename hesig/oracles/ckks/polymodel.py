"""The polynomial network the CKKS server evaluates, read off a hecnn-style torch model.

Supported structure (hecnn, TenSEAL's MNIST tutorial): Conv2d (no padding, dilation 1, groups 1)
-> Square -> Flatten -> Linear -> Square -> Linear. Anything else (ReLU, max-pool: lenet5) has no
low-degree polynomial form and is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from ...core.errors import InvalidValueError, ShapeError

if TYPE_CHECKING:
    from torch import nn

# conv, x^2, fc1, x^2, fc2: one rescale each.
POLY_CNN_DEPTH = 5


@dataclass
class PolyCNN:
    """Weights as float64 numpy. Feature order f = channel * (OH * OW) + i * OW + j (torch's Flatten)."""

    in_shape: tuple[int, int, int]
    conv_weight: np.ndarray   # [O, C, k, k]
    conv_bias: np.ndarray     # [O]
    stride: int
    out_hw: tuple[int, int]
    fc1_weight: np.ndarray    # [H1, O*OH*OW]
    fc1_bias: np.ndarray
    fc2_weight: np.ndarray    # [classes, H1]
    fc2_bias: np.ndarray
    depth: int = POLY_CNN_DEPTH

    @property
    def num_features(self) -> int:
        return self.conv_weight.shape[0] * self.out_hw[0] * self.out_hw[1]

    @property
    def num_pixels(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    def windows(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per output position: (pixel indices [C*k*k], feature indices [O], weights [O, C*k*k])."""
        c, h, w = self.in_shape
        o, _, k, _ = self.conv_weight.shape
        oh, ow = self.out_hw
        kernel = self.conv_weight.reshape(o, c * k * k)
        ch, a, b = np.meshgrid(np.arange(c), np.arange(k), np.arange(k), indexing="ij")
        out = []
        for i in range(oh):
            for j in range(ow):
                pix = (ch * h * w + (self.stride * i + a) * w + (self.stride * j + b)).reshape(-1)
                feats = np.arange(o) * oh * ow + i * ow + j
                out.append((pix, feats, kernel))
        return out

    def conv_linear(self, x: np.ndarray) -> np.ndarray:
        """The bias-free convolution of perturbations: [Q, C, H, W] -> [Q, features], float64."""
        import torch  # here, not at import: a server helper process unpickles PolyCNN without torch
        t = torch.nn.functional.conv2d(torch.from_numpy(np.asarray(x, dtype=np.float64)),
                                       torch.from_numpy(self.conv_weight), stride=self.stride)
        return t.flatten(1).numpy()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Plaintext reference: [Q, C, H, W] -> logits [Q, classes], float64."""
        h = self.conv_linear(x) + np.repeat(self.conv_bias, self.out_hw[0] * self.out_hw[1])
        h = (h * h) @ self.fc1_weight.T + self.fc1_bias
        return (h * h) @ self.fc2_weight.T + self.fc2_bias


def poly_cnn(model: nn.Module, in_shape: tuple[int, int, int], arch: str = "model") -> PolyCNN:
    from torch import nn

    from ...models.architectures import Square
    layers = [m for m in model.children()]
    kinds = [type(m).__name__ for m in layers]
    expected = [nn.Conv2d, Square, nn.Flatten, nn.Linear, Square, nn.Linear]
    if len(layers) != len(expected) or any(not isinstance(m, t) for m, t in zip(layers, expected)):
        raise InvalidValueError(f"the CKKS oracle evaluates Conv2d -> x^2 -> Linear -> x^2 -> Linear models "
                                f"(arch hecnn); {arch} is {' -> '.join(kinds)}")
    conv, _, _, fc1, _, fc2 = layers
    if conv.padding not in ((0, 0), 0, "valid") or conv.dilation != (1, 1) or conv.groups != 1 \
            or conv.stride[0] != conv.stride[1] or conv.kernel_size[0] != conv.kernel_size[1]:
        raise InvalidValueError(f"{arch}'s conv1 must be square, unpadded, undilated and ungrouped")
    c, h, w = in_shape
    k, s = conv.kernel_size[0], conv.stride[0]
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    if conv.in_channels != c or fc1.in_features != conv.out_channels * oh * ow:
        raise ShapeError(f"{arch} does not take inputs of shape {list(in_shape)}")

    def f64(t):
        return t.detach().cpu().double().numpy().copy() if t is not None else None

    zeros = np.zeros
    return PolyCNN(tuple(in_shape), f64(conv.weight), f64(conv.bias) if conv.bias is not None else zeros(conv.out_channels),
                   s, (oh, ow), f64(fc1.weight), f64(fc1.bias) if fc1.bias is not None else zeros(fc1.out_features),
                   f64(fc2.weight), f64(fc2.bias) if fc2.bias is not None else zeros(fc2.out_features))


def im2col_slots(in_shape: tuple[int, int, int], kernel: int, stride: int) -> np.ndarray:
    """TenSEAL's ``im2col_encoding`` layout: pixel index held by each used slot.

    Slot k * windows + w holds pixel (s*i + a, s*j + b) for kernel offset k = a*kernel + b and
    window w = i*OW + j (single channel). Checked against TenSEAL in tests/test_ckks.py.
    """
    c, h, w = in_shape
    if c != 1:
        raise ShapeError("TenSEAL's im2col encoding takes single-channel images")
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    a, b, i, j = np.meshgrid(np.arange(kernel), np.arange(kernel), np.arange(oh), np.arange(ow), indexing="ij")
    return ((stride * i + a) * w + (stride * j + b)).reshape(-1)
