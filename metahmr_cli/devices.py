"""The one place a ``--device`` string becomes a torch device."""

from __future__ import annotations

import torch

from metahmr_cli.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU when one is visible, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and
    ``"mps"`` as asked.

    Raises:
        ConfigError: an unknown device, or a CUDA device asked for where none is visible (the message names the fix).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu, cuda or cuda:N.") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu, cuda or cuda:N.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    return dev
