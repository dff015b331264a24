"""Device names as users write them (``--device``, ``match.device``, ``TrainConfig.device``).

The one parser that training, evaluation and the tie-point pipeline all use. The spelling check needs no
torch, so a run's option validation can reject ``--device gpu`` before the heavy imports.
"""

from __future__ import annotations

import re

from geomatch.errors import InputError

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(device) -> str:
    """The normalised spelling (``auto``, ``cpu``, ``cuda``, ``cuda:N``); anything else is an InputError."""
    text = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE_RE.match(text):
        raise InputError(f"--device '{device}' is not valid; use auto, cpu or cuda[:N]")
    return text


def parse_device(device):
    """``auto`` -> cuda when available, else cpu; ``cpu``; ``cuda`` or ``cuda:N`` (checked to exist here).

    Returns a ``torch.device``.
    """
    import torch

    text = check_device_name(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0 or auto"
            )
    return dev
