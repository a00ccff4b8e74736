"""Runtime helpers every job needs: device choice, index specs, seeding."""

from __future__ import annotations

import torch

from .errors import InvalidValueError


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> :func:`default_device`; ``cpu``, ``cuda``, ``cuda:N`` as asked (checked)."""
    if device in (None, "auto"):
        return default_device()
    if isinstance(device, torch.device):
        device = str(device)
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidValueError(f"unknown device '{device}' (choose from auto, cpu, cuda)")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidValueError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(device)


def describe_device(device: str | torch.device | None) -> dict[str, str | None]:
    """What a result records about where it ran: the device, the GPU's name (None on CPU) and torch's version."""
    dev = resolve_device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"device": dev.type, "gpu": gpu, "torch": torch.__version__}


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
