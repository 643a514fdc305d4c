"""The authors' released TSPNet weights: read, checked against the dataset, converted to `tspnet.model.TSPNet`.

The authors save `TSPNet_Model.state_dict()` with `torch.save` (METHOD.md,
"The released checkpoint"): a flat mapping of tensors under
`prop_backbone.*`. Their fusion layer is a Linear; their three heads are
Conv1d(kernel_size=1) over a [1, D, M] sequence, whose weight [out, in, 1]
is, without its last axis, the weight of the Linear that computes the same
map over [M, D] rows (`tspnet.model` explains why the two layouts agree). So
the conversion drops that axis and renames the keys; biases are unchanged.

Their code at the pinned commit names the center head `prop_center`;
METHOD.md's key table says `prop_completeness`. Either name is accepted
(exactly one of them), since the file behind the authors' link is not known.

The classifier's output rows are the dataset's classes followed by the
background. Rows 0..C-1 of the released THUMOS14 model follow
`class_lists.json`, the registry's order; a checkpoint trained with another
order names its classes (`train.checkpoint_classes`) and its rows are
reordered to the dataset's.

A file that is not a state dict gets one line saying what it looks like (the
authors' README links the same Drive file for the paper and the model, so it
may be a PDF); one whose keys or shapes differ gets every difference listed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from tspnet.files import DataError
from tspnet.model import TSPNet

PREFIX = "prop_backbone."
CENTER_NAMES = ("prop_center", "prop_completeness")  # the code's name; METHOD.md's table
# The authors' modules and this project's, in TSPNet's order; `center` stands for either CENTER_NAMES.
LAYERS = {
    "prop_fusion.0": "fusion.0",
    "prop_classifier.0": "classifier.0",
    "prop_classifier.2": "classifier.2",
    "prop_attention.0": "attention.0",
    "prop_attention.2": "attention.2",
    "center.0": "center.0",
    "center.2": "center.2",
}


def expected_shapes(feature_dim: int, num_classes: int, center: str = CENTER_NAMES[0]) -> dict[str, tuple[int, ...]]:
    """Every key of the authors' state dict and its shape, for D = feature_dim and C = num_classes."""
    d, hidden = feature_dim, feature_dim // 2
    shapes = {
        "prop_fusion.0": ((d, 3 * d), (d,)),
        "prop_classifier.0": ((hidden, d, 1), (hidden,)),
        "prop_classifier.2": ((num_classes + 1, hidden, 1), (num_classes + 1,)),
        "prop_attention.0": ((hidden, d, 1), (hidden,)),
        "prop_attention.2": ((1, hidden, 1), (1,)),
        "center.0": ((hidden, d, 1), (hidden,)),
        "center.2": ((1, hidden, 1), (1,)),
    }
    out = {}
    for layer, (weight, bias) in shapes.items():
        name = PREFIX + layer.replace("center", center, 1)
        out[f"{name}.weight"], out[f"{name}.bias"] = weight, bias
    return out


def describe_file(path: Path) -> str:
    """What a file that torch cannot read looks like, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(512)
    lowered = head.lstrip().lower()
    if head.startswith(b"%PDF"):
        return "a PDF document (the authors' README links the same Drive file for the paper and the model)"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a download page instead of the file?)"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch.save's zip, or a legacy pickle
        return ("a PyTorch or pickle file holding objects other than tensors and plain containers, which "
                "torch.load(weights_only=True) does not unpickle")
    return f"not a PyTorch checkpoint (it starts with {head[:16]!r})"


def read_state_dict(path: Path, where: str) -> dict[str, Tensor]:
    """A flat {name: tensor} state dict from `path`, read with torch.load(weights_only=True)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError,
            AttributeError, TypeError, KeyError, IndexError):
        # weights_only refuses anything but tensors and plain containers; what the file is says more.
        raise DataError(f"{where}: {path} cannot be loaded as a state dict: {describe_file(path)}") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        got = type(state).__name__ if not isinstance(state, dict) else (
            "a mapping that is not {name: tensor}" + (f"; its keys begin {list(state)[:4]}" if state else ", empty"))
        raise DataError(f"{where}: {path} is not a state dict of tensors (it holds {got}); expected the authors' "
                        "TSPNet_Model.state_dict() saved with torch.save")
    return state


def check_state_dict(state: dict[str, Tensor], feature_dim: int, num_classes: int, where: str) -> str:
    """Refuse a state dict whose keys or shapes are not the authors' for (D, C); returns the center head's name."""
    present = [name for name in CENTER_NAMES if any(k.startswith(f"{PREFIX}{name}.") for k in state)]
    center = present[0] if len(present) == 1 else CENTER_NAMES[0]
    expected = expected_shapes(feature_dim, num_classes, center)
    problems = []
    if len(present) > 1:
        problems.append(f"both {' and '.join(PREFIX + n for n in CENTER_NAMES)} are present (one center head)")
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    shapes = [f"{k} {list(state[k].shape)}, expected {list(shape)}" for k, shape in expected.items()
              if k in state and tuple(state[k].shape) != shape]
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes))
    classifier = f"{PREFIX}prop_classifier.2.bias"
    if classifier in state and state[classifier].dim() == 1 and state[classifier].shape[0] != num_classes + 1:
        problems.append(f"its classifier has {state[classifier].shape[0]} outputs, i.e. "
                        f"{state[classifier].shape[0] - 1} classes and background, but the dataset has "
                        f"{num_classes} classes (a checkpoint of another dataset?)")
    if problems:
        raise DataError(f"{where}: not the authors' TSPNet state dict for {feature_dim}-d features and "
                        f"{num_classes} classes: " + " | ".join(problems))
    return center


def class_rows(dataset_classes: Sequence[str], checkpoint_classes: Sequence[str] | None, where: str) -> list[int]:
    """The classifier rows of the checkpoint in the dataset's class order, background last."""
    if checkpoint_classes is None:
        return list(range(len(dataset_classes) + 1))
    names = [str(c) for c in checkpoint_classes]
    if len(set(names)) != len(names) or set(names) != set(dataset_classes):
        only_ckpt = sorted(set(names) - set(dataset_classes))
        only_data = sorted(set(dataset_classes) - set(names))
        raise DataError(f"{where}: the checkpoint's classes must be the dataset's, each once, in any order; "
                        f"only in the checkpoint's list: {only_ckpt}; only in the dataset: {only_data}"
                        + ("; some name is listed twice" if len(set(names)) != len(names) else ""))
    return [names.index(c) for c in dataset_classes] + [len(names)]


def tspnet_from_state_dict(state: dict[str, Tensor], feature_dim: int, num_classes: int, where: str,
                           rows: Sequence[int] | None = None, dropout: float = 0.5) -> TSPNet:
    """This project's TSPNet with the authors' weights (checked first); `rows` reorders the classifier."""
    center = check_state_dict(state, feature_dim, num_classes, where)
    converted = {}
    for theirs, ours in LAYERS.items():
        name = PREFIX + theirs.replace("center", center, 1)
        weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        converted[f"{ours}.weight"] = weight.squeeze(-1) if weight.dim() == 3 else weight
        converted[f"{ours}.bias"] = bias
    if rows is not None:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        converted["classifier.2.weight"] = converted["classifier.2.weight"][index]
        converted["classifier.2.bias"] = converted["classifier.2.bias"][index]
    model = TSPNet(feature_dim, num_classes, dropout)
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in converted.items()})
    return model.eval()


def infer_feature_dim(state: dict[str, Tensor]) -> int | None:
    """D from the fusion layer's weight [D, 3D], for a dataset fetched without features; None if absent."""
    weight = state.get(f"{PREFIX}prop_fusion.0.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None
