"""Where tensors go: one parser of ``--device`` for every command."""

from __future__ import annotations

import torch

from molgen.errors import MolgenError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` as asked.

    Raises:
        MolgenError: CUDA asked for without a GPU, a device index that does not exist, or a
            string that is not a device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MolgenError("--device cuda was asked for but no CUDA device is available.")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise MolgenError(f"--device {device!r} is not a device; use auto, cpu or cuda.") from None
    if chosen.type == "cuda" and chosen.index is not None:
        count = torch.cuda.device_count()
        if chosen.index >= count:
            raise MolgenError(
                f"--device {device}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})."
            )
    return chosen
