"""Plaintext testbed oracle: the secrets live inside this object, in the clear, next to the model.

It is the reference the CKKS oracle is measured against, and the fast path for building decoder
training sets (the model owner may evaluate its own model on its own data in plaintext).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import InvalidValueError, ClientRefusal, ShapeError
from ..core.runtime import default_device, resolve_device
from ..models.inference import fast_inference_copy
from .base import Oracle
from .policies import ClientPolicy, ClientView, parse_client_policy


class PlaintextOracle(Oracle):
    """Label-change oracle over a torch model and secret rows X [n, C, H, W] in [0, 1].

    ``batch_size`` is the forward batch (``capacity``): 512 on CPU (the batch benchmarks/search.py
    measures), 65536 on a GPU, where a larger batch fills the device.

    ``policy`` (optional ClientPolicy or spec string): release bits as a CKKS client under that
    policy would -- flooding / rounding of the logits before the comparison, randomized response
    (``rr`` / ``bdpl``), the reference label fixed once per row from the (flooded, noisy) unperturbed
    logits, a per-row reply budget of ``replies_per_key`` replies, a reply being one call's queries
    of that row, per ``reply_slots`` (as CKKSOracle with ``fresh-keys``: one key per row;
    ``row_replies`` counts them) and a per-row evaluation budget (``evaluations:N``). ``input-noise``
    adds fresh seeded Gaussian noise to every evaluated input. ``view`` (a
    :class:`~hesig.oracles.policies.ClientView`) records what the client saw of each row.
    None (default): the plain argmax comparison, unchanged.
    ``seed``: the client's randomness (flooding, randomized response, input noise).
    """

    def __init__(self, model: nn.Module, secrets: torch.Tensor, *, device: str | torch.device | None = None,
                 batch_size: int | None = None, budget: int | None = None, policy: ClientPolicy | str | None = None,
                 reply_slots: int = 4095, seed: int = 0):
        if secrets.ndim != 4:
            raise ShapeError(f"secrets must be [n, C, H, W], got shape {tuple(secrets.shape)}")
        if not torch.isfinite(secrets).all():
            raise InvalidValueError("secret inputs contain NaN or infinity")
        super().__init__(secrets.shape[0], tuple(secrets.shape[1:]), budget)
        self.device = torch.device(device) if device is not None else default_device()
        self.capacity = int(batch_size or (65536 if self.device.type == "cuda" else 512))
        if self.capacity < 1:
            raise InvalidValueError(f"batch size must be >= 1, got {self.capacity}")
        # An exact rewrite (pool before ReLU, in-place ReLU, channels-last): 2.4x on CPU (benchmarks/search.json).
        self._model = fast_inference_copy(model).to(self.device)
        self._secrets = secrets.to(self.device, torch.float32)
        self.policy = None if policy is None else parse_client_policy(policy)
        self.row_replies = torch.zeros(self.num_rows, dtype=torch.long)  # CKKS-equivalent replies (policy only)
        self.row_evaluations = torch.zeros(self.num_rows, dtype=torch.long)
        self.view = ClientView(self.num_rows)
        if self.policy is None:
            self._labels = self._predict(self._secrets)
        else:
            self._rng = self.policy.rng(seed)
            self._noise = torch.Generator(self.device).manual_seed(int(seed))
            self._reply_slots = int(reply_slots)
            top = self.policy.released_top(self._logits(self._noisy(self._secrets.clone())).T, self._rng, randomize=False)
            self._labels = torch.from_numpy(top).to(self.device)

    @torch.inference_mode()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, x.shape[0], self.capacity):
            batch = x[start:start + self.capacity].contiguous(memory_format=torch.channels_last)
            out.append(self._model(batch).argmax(1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def _logits(self, x: torch.Tensor):
        """float64 numpy [n, num_classes]."""
        out = []
        for start in range(0, x.shape[0], self.capacity):
            batch = x[start:start + self.capacity].contiguous(memory_format=torch.channels_last)
            out.append(self._model(batch).double().cpu())
        return torch.cat(out).numpy()

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """x plus the policy's fresh input noise (in place; x is the caller's own copy)."""
        if self.policy.input_noise:
            x.add_(torch.randn(x.shape, generator=self._noise, device=self.device), alpha=self.policy.input_noise)
        return x

    @torch.inference_mode()
    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        where = rows.device
        rows = rows.to(self.device)
        x = torch.index_select(self._secrets, 0, rows).add_(perturbations.to(self.device))
        if self.policy is None:
            return (self._predict(x) == self._labels[rows]).to(where)
        # As CKKSOracle: one reply per row per call, per reply_slots queries of that row.
        per_row = torch.bincount(rows.cpu(), minlength=self.num_rows)
        replies = self.row_replies + (per_row + self._reply_slots - 1) // self._reply_slots
        evaluations = self.row_evaluations + per_row
        if self.policy.replies_per_key is not None and int(replies.max()) > self.policy.replies_per_key:
            raise ClientRefusal(f"a row's decryption budget of {self.policy.replies_per_key} replies "
                                       "would be exceeded")
        if self.policy.evaluations_per_input is not None and int(evaluations.max()) > self.policy.evaluations_per_input:
            raise ClientRefusal(f"an input's evaluation budget of {self.policy.evaluations_per_input} evaluations "
                                "would be exceeded")
        self.row_replies, self.row_evaluations = replies, evaluations
        logits = self._logits(self._noisy(x)).T
        labels = self._labels[rows].cpu().numpy()
        self.view.record(rows.cpu().numpy(), logits, labels)
        top = torch.from_numpy(self.policy.released_top(logits, self._rng)).to(self.device)
        return (top == self._labels[rows]).to(where)


class PlaintextFactory:
    """The registry's factory for ``--oracle plaintext``: one model, one device and batch size, and
    optionally the bits a CKKS client under ``client_policy`` would release (None: the plain bit)."""

    def __init__(self, target, *, device: str | torch.device | None = None, batch_size: int | None = None,
                 client_policy: str | None = None, client_seed: int = 0):
        self.model, self.device, self.batch_size = target.model, resolve_device(device), batch_size
        self.policy = None if client_policy is None else parse_client_policy(client_policy)
        self.client_seed = int(client_seed)

    def __call__(self, secrets: torch.Tensor, budget: int | None) -> PlaintextOracle:
        # Every chunk's client draws from the same seed (its rows differ): the bytes do not depend
        # on which worker ran which chunk, nor on resumes.
        return PlaintextOracle(self.model, secrets, device=self.device, batch_size=self.batch_size, budget=budget,
                               policy=self.policy, seed=self.client_seed)

    def describe(self) -> dict:
        return {} if self.policy is None else {"client_policy": self.policy.spec}


factory = PlaintextFactory
