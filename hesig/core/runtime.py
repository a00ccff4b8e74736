"""Runtime helpers every job needs: device choice, index specs, seeding."""

from __future__ import annotations

import os

import torch

from .errors import InvalidValueError


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: ``HESIG_GPU_EXACT=1``: cuDNN convolutions and CUDA matmuls in full float32 instead of PyTorch's
#: default TF32 (10-bit mantissas). On an H200 a GPU oracle then agrees with the CPU on 99.99 % of
#: ε bit for bit instead of 97 %, at about 0.55 of the throughput (README, Benchmarks).
GPU_EXACT_ENV = "HESIG_GPU_EXACT"


def gpu_exact() -> bool:
    """Whether ``HESIG_GPU_EXACT`` asks for full-float32 GPU arithmetic ('' or 0: no; 1: yes)."""
    value = os.environ.get(GPU_EXACT_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise InvalidValueError(f"{GPU_EXACT_ENV} must be 0 or 1, not {value!r}")
    return value == "1"


def apply_gpu_precision() -> bool:
    """Turn TF32 off process-wide when :func:`gpu_exact`; returns whether it is off. PyTorch's
    switches are global, so this is the one place that sets them."""
    if gpu_exact():
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return not torch.backends.cudnn.allow_tf32


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> :func:`default_device`; ``cpu``, ``cuda``, ``cuda:N`` as asked (checked).
    A CUDA device gets the precision ``HESIG_GPU_EXACT`` asks for (:func:`apply_gpu_precision`)."""
    gpu_exact()  # a bad value is refused on every machine, not only where a GPU would read it
    if device in (None, "auto"):
        device = default_device()
    if isinstance(device, torch.device):
        device = str(device)
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidValueError(f"unknown device '{device}' (choose from auto, cpu, cuda)")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidValueError("device 'cuda' was asked for but no CUDA device is available")
    if str(device).startswith("cuda"):
        apply_gpu_precision()
    return torch.device(device)


def describe_device(device: str | torch.device | None) -> dict[str, str | None]:
    """What a result records about where it ran: the device, the GPU's name (None on CPU) and torch's
    version; on a GPU also whether its convolutions ran in TF32."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return {"device": dev.type, "gpu": None, "torch": torch.__version__}
    return {"device": dev.type, "gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__,
            "tf32": bool(torch.backends.cudnn.allow_tf32)}


def parse_indices(spec: str | None, n: int) -> torch.Tensor:
    """Positions into a split of size ``n``: '' / None -> all; 'A:B' -> A..B-1; 'i,j,k' -> that list.

    Strict, for every command alike: no negative positions, nothing past the split, no empty or
    reversed range, no repeated position; nothing is clipped silently.
    """
    if not spec:
        return torch.arange(n)
    try:
        if ":" in spec:
            start, _, stop = spec.partition(":")
            first = int(start) if start.strip() else 0
            end = int(stop) if stop.strip() else n
            if not 0 <= first < end <= n:
                raise InvalidValueError(f"indices '{spec}' must satisfy 0 <= A < B <= {n} (the split has {n} images)")
            return torch.arange(first, end)
        idx = torch.tensor([int(v) for v in spec.split(",")], dtype=torch.long)
    except ValueError:
        raise InvalidValueError(f"cannot parse indices '{spec}' (use A:B or i,j,k)") from None
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise InvalidValueError(f"indices '{spec}' fall outside 0..{n - 1} (the split has {n} images)")
    if idx.unique().numel() != idx.numel():
        raise InvalidValueError(f"indices '{spec}' repeat a position")
    return idx


def seeded_generator(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init happens there) and return a CPU generator for data order."""
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed))
