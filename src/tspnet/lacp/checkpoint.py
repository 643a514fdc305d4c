"""LACP weights in the authors' layout (LACP.md section 9): read, checked, converted; and written.

The released THUMOS14 model is a plain `state_dict` of the authors' `Model`
saved with `torch.save`: three tensors,

    cls_module.conv_1.0.weight      [H, D, 3]    Conv1d, kernel 3 (H = 2048)
    cls_module.conv_1.0.bias        [H]
    cls_module.classifier.0.weight  [C+1, H, 1]  Conv1d, kernel 1, no bias; channel C = background

This project writes its own trained LACP model in the same layout, so either
file can be given as `locate.checkpoint`. Files are read with
`torch.load(weights_only=True)`: tensors and plain containers only, never
arbitrary pickled objects.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from tspnet.files import DataError, atomic_path
from tspnet.lacp.model import LACPNet, conv_to_linear, linear_to_conv

CONV_WEIGHT = "cls_module.conv_1.0.weight"
CONV_BIAS = "cls_module.conv_1.0.bias"
CLASSIFIER_WEIGHT = "cls_module.classifier.0.weight"


def authors_shapes(feature_dim: int, num_classes: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {CONV_WEIGHT: (hidden, feature_dim, 3), CONV_BIAS: (hidden,), CLASSIFIER_WEIGHT: (num_classes + 1, hidden, 1)}


def to_authors_state_dict(model: LACPNet) -> dict[str, torch.Tensor]:
    return {
        CONV_WEIGHT: linear_to_conv(model.embed.weight.detach(), 3).cpu(),
        CONV_BIAS: model.embed.bias.detach().clone().cpu(),
        CLASSIFIER_WEIGHT: model.classifier.weight.detach().clone().cpu()[:, :, None],
    }


def check_state_dict(state: Mapping, expected: dict[str, tuple[int, ...]], where: str) -> None:
    """Refuse, in one message, a state dict whose keys or shapes are not `expected`."""
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key, shape in expected.items():
        value = state.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != shape:
            problems.append(f"{key} has shape {list(value.shape)}, expected {list(shape)}")
        elif not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            problems.append(f"{key} is not a finite floating-point tensor")
    if problems:
        raise DataError(f"{where}: not an LACP state dict for this dataset ({'; '.join(problems)}); expected "
                        + ", ".join(f"{k} {list(s)}" for k, s in expected.items()))


def load_authors_state_dict(model: LACPNet, state: Mapping, where: str) -> LACPNet:
    """Copy an authors'-layout state dict into `model` (kernel-1 and kernel-3 Conv1d weights become Linear)."""
    check_state_dict(state, authors_shapes(model.feature_dim, model.num_classes, model.hidden), where)
    with torch.no_grad():
        model.embed.weight.copy_(conv_to_linear(state[CONV_WEIGHT].float()))
        model.embed.bias.copy_(state[CONV_BIAS].float())
        model.classifier.weight.copy_(state[CLASSIFIER_WEIGHT].float()[:, :, 0])
    return model


def read_state_dict(path: Path, where: str) -> Mapping:
    """The mapping saved in `path`, read without unpickling anything but tensors and containers."""
    if not path.is_file():
        raise DataError(f"{where}: {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: {path} is not a PyTorch state dict readable with weights_only=True "
                        f"({first_line})") from exc
    if not isinstance(state, Mapping):
        raise DataError(f"{where}: {path} holds a {type(state).__name__}, not a state dict (a mapping of "
                        "parameter names to tensors)")
    return state


def load_checkpoint(path: Path, feature_dim: int, num_classes: int, hidden: int, dropout: float,
                    where: str = "locate.checkpoint") -> LACPNet:
    model = LACPNet(feature_dim, num_classes, hidden, dropout)
    return load_authors_state_dict(model, read_state_dict(path, where), f"{where} ({path})").eval()


def save_checkpoint(path: Path, model: LACPNet) -> None:
    # Through a buffer: torch names the archive's root folder after the file, and the
    # temporary file's random name would change the bytes of every save.
    buffer = io.BytesIO()
    torch.save(to_authors_state_dict(model), buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
