"""tspnet.checkpoint: the authors' released state dict, loaded into this project's TSPNet.

State dicts are built here in the authors' key layout (tests/reference/authors_model.py: their Conv1d
heads); the loaded model's outputs must equal that straightforward Conv1d network's on the same input.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.reference.authors_model import AuthorsModel
from tspnet import checkpoint, pipeline
from tspnet.files import DataError

DIM, CLASSES = 16, 5
WHERE = "train.checkpoint (path released.pkl)"


def authors_state(center_name: str = "prop_center", seed: int = 0, dim: int = DIM, classes: int = CLASSES):
    torch.manual_seed(seed)
    model = AuthorsModel(dim, classes, center_name)
    return model, model.state_dict()


def saved(tmp_path: Path, obj, name: str = "released.pkl") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("center_name", checkpoint.CENTER_NAMES)
def test_loaded_model_equals_the_authors_conv1d_network(tmp_path: Path, center_name: str):
    reference, state = authors_state(center_name)
    assert sorted(state) == sorted(checkpoint.expected_shapes(DIM, CLASSES, center_name))
    loaded = checkpoint.read_state_dict(saved(tmp_path, state), WHERE)
    model = checkpoint.tspnet_from_state_dict(loaded, DIM, CLASSES, WHERE)
    assert not model.training
    pooled = torch.randn(37, 3 * DIM)
    heads = model(pooled)
    cls, attention, center = reference.heads(pooled)
    torch.testing.assert_close(heads.cls, cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heads.attention, attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heads.center, center, rtol=1e-5, atol=1e-6)


def test_kernel_one_conv_weights_become_linear_weights():
    _, state = authors_state()
    model = checkpoint.tspnet_from_state_dict(state, DIM, CLASSES, WHERE)
    ours = model.state_dict()
    assert torch.equal(ours["classifier.0.weight"], state["prop_backbone.prop_classifier.0.weight"][:, :, 0])
    assert torch.equal(ours["center.2.weight"], state["prop_backbone.prop_center.2.weight"][:, :, 0])
    assert torch.equal(ours["fusion.0.weight"], state["prop_backbone.prop_fusion.0.weight"])
    assert ours["classifier.2.weight"].shape == (CLASSES + 1, DIM // 2)


def test_the_shapes_of_the_released_thumos14_model():
    # METHOD.md, "The released checkpoint": D = 2048, C = 20.
    shapes = checkpoint.expected_shapes(2048, 20)
    assert shapes["prop_backbone.prop_fusion.0.weight"] == (2048, 6144)
    assert shapes["prop_backbone.prop_classifier.0.weight"] == (1024, 2048, 1)
    assert shapes["prop_backbone.prop_classifier.2.weight"] == (21, 1024, 1)
    assert shapes["prop_backbone.prop_attention.2.bias"] == (1,)
    assert shapes["prop_backbone.prop_center.0.weight"] == (1024, 2048, 1) and len(shapes) == 14


def test_classifier_rows_follow_the_checkpoints_class_order():
    reference, state = authors_state()
    dataset = ["a", "b", "c", "d", "e"]
    rows = checkpoint.class_rows(dataset, ["c", "a", "e", "b", "d"], "train.checkpoint_classes")
    assert rows == [1, 3, 0, 4, 2, 5]  # dataset class a is the checkpoint's row 1, ...; background stays last
    model = checkpoint.tspnet_from_state_dict(state, DIM, CLASSES, WHERE, rows)
    pooled = torch.randn(9, 3 * DIM)
    cls, _, _ = reference.heads(pooled)
    torch.testing.assert_close(model(pooled).cls, cls[:, rows], rtol=1e-5, atol=1e-6)
    assert checkpoint.class_rows(dataset, None, "k") == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("names, message", [
    (["a", "b", "c", "d", "x"], r"only in the checkpoint's list: \['x'\]; only in the dataset: \['e'\]"),
    (["a", "b", "c", "d"], r"only in the dataset: \['e'\]"),
    (["a", "b", "c", "d", "e", "e"], r"listed twice"),
])
def test_a_class_list_of_other_classes_is_refused(names, message):
    with pytest.raises(DataError, match=r"train.checkpoint_classes: .*" + message):
        checkpoint.class_rows(["a", "b", "c", "d", "e"], names, "train.checkpoint_classes")


def edited(edit) -> dict:
    _, state = authors_state()
    edit(state)
    return state


@pytest.mark.parametrize("state, message", [
    (edited(lambda s: s.pop("prop_backbone.prop_attention.2.bias")),
     r"missing keys: prop_backbone.prop_attention.2.bias"),
    (edited(lambda s: s.update({"prop_backbone.extra.weight": torch.zeros(1)})),
     r"unexpected keys: prop_backbone.extra.weight"),
    (edited(lambda s: s.update({"prop_backbone.prop_fusion.0.weight": torch.zeros(DIM, 2 * DIM)})),
     r"wrong shapes: prop_backbone.prop_fusion.0.weight \[16, 32\], expected \[16, 48\]"),
    (edited(lambda s: s.update({"prop_backbone.prop_completeness.0.weight": torch.zeros(1)})),
     r"both prop_backbone.prop_center and prop_backbone.prop_completeness are present"),
    ({f"module.{k}": v for k, v in authors_state()[1].items()}, r"missing keys: .*unexpected keys: module\."),
])
def test_other_keys_or_shapes_are_refused_with_a_list(state: dict, message: str):
    with pytest.raises(DataError, match=rf"{WHERE.replace('(', '[(]').replace(')', '[)]')}: not the authors' "
                                        rf"TSPNet state dict for 16-d features and 5 classes: .*{message}"):
        checkpoint.tspnet_from_state_dict(state, DIM, CLASSES, WHERE)


def test_a_checkpoint_of_another_dataset_says_so():
    _, state = authors_state(classes=20)  # the released THUMOS14 model's 20 classes, a 5-class dataset
    with pytest.raises(DataError, match=r"its classifier has 21 outputs, i.e. 20 classes and background, but the "
                                        r"dataset has 5 classes \(a checkpoint of another dataset\?\)"):
        checkpoint.tspnet_from_state_dict(state, DIM, CLASSES, WHERE)


@pytest.mark.parametrize("content, message", [
    (b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj", r"a PDF document \(the authors' README links the same Drive file"),
    (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning", r"an HTML page"),
    (b"", r"an empty file"),
    (b"\x00\x01garbage bytes that are nothing", r"not a PyTorch checkpoint \(it starts with"),
])
def test_files_that_are_not_checkpoints_get_one_line(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "released.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"train.checkpoint: .*released.pkl cannot be loaded as a state dict: "
                                        + message) as info:
        checkpoint.read_state_dict(path, "train.checkpoint")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("obj, message", [
    ({"state_dict": {"a": torch.zeros(1)}, "epoch": 3},
     r"a mapping that is not \{name: tensor\}; its keys begin \['state_dict', 'epoch'\]"),
    ([torch.zeros(1)], r"list\)"),
    ({}, r"a mapping that is not \{name: tensor\}, empty"),
])
def test_loadable_files_that_are_not_state_dicts_are_refused(tmp_path: Path, obj, message: str):
    with pytest.raises(DataError, match=r"is not a state dict of tensors \(it holds " + message):
        checkpoint.read_state_dict(saved(tmp_path, obj), "train.checkpoint")


def test_arbitrary_objects_are_never_unpickled(tmp_path: Path):
    path = saved(tmp_path, {"weights": object()})
    with pytest.raises(DataError, match=r"cannot be loaded as a state dict: a PyTorch or pickle file holding "
                                        r"objects other than tensors .*torch.load\(weights_only=True\) does not"):
        checkpoint.read_state_dict(path, "train.checkpoint")
    path.write_bytes(pickle.dumps({"weights": object()}, protocol=2))  # a plain pickle: refused the same way
    with pytest.raises(DataError, match=r"a PyTorch or pickle file holding objects other than tensors"):
        checkpoint.read_state_dict(path, "train.checkpoint")


def test_the_converted_model_round_trips_through_the_model_file(tmp_path: Path):
    reference, state = authors_state()
    model = checkpoint.tspnet_from_state_dict(state, DIM, CLASSES, WHERE)
    pipeline.save_model(tmp_path / "model.pt", model)
    loaded = pipeline.load_model(tmp_path / "model.pt")
    pooled = torch.randn(11, 3 * DIM)
    torch.testing.assert_close(loaded(pooled).cls, reference.heads(pooled)[0], rtol=1e-5, atol=1e-6)


def test_feature_dim_from_the_checkpoint():
    assert checkpoint.infer_feature_dim(authors_state()[1]) == DIM
    assert checkpoint.infer_feature_dim({}) is None
