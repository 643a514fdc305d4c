"""LACP weights in the authors' layout (LACP.md section 9): loaded, refused, written."""

import io
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from tspnet.files import DataError
from tspnet.lacp.checkpoint import (CLASSIFIER_WEIGHT, CONV_BIAS, CONV_WEIGHT, load_checkpoint, save_checkpoint,
                                    to_authors_state_dict)
from tspnet.lacp.model import LACPNet, Packing, fused_cas


def authors_state_dict(feature_dim: int, num_classes: int, hidden: int, seed: int = 0) -> OrderedDict:
    """What `torch.save(net.state_dict())` of the authors' Model holds: Conv1d weights, no `module.` prefix."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict([
        (CONV_WEIGHT, torch.randn(hidden, feature_dim, 3, generator=generator) * 0.2),
        (CONV_BIAS, torch.randn(hidden, generator=generator) * 0.1),
        (CLASSIFIER_WEIGHT, torch.randn(num_classes + 1, hidden, 1, generator=generator) * 0.2),
    ])


def conv1d_reference(state: dict, features: torch.Tensor) -> torch.Tensor:
    """The authors' forward of one video [T, D] with nn.Conv1d layers: fused CAS [T, C+1]."""
    hidden, feature_dim, _ = state[CONV_WEIGHT].shape
    conv = torch.nn.Conv1d(feature_dim, hidden, kernel_size=3, stride=1, padding=1)
    classifier = torch.nn.Conv1d(hidden, state[CLASSIFIER_WEIGHT].shape[0], kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(state[CONV_WEIGHT])
        conv.bias.copy_(state[CONV_BIAS])
        classifier.weight.copy_(state[CLASSIFIER_WEIGHT])
        probs = torch.sigmoid(classifier(F.relu(conv(features.T[None]))))[0].T
    return torch.cat((probs[:, :-1] * (1 - probs[:, -1:]), probs[:, -1:]), dim=1)


def save(state, path):
    torch.save(state, path)
    return path


def test_loaded_authors_weights_give_the_conv1d_reference_outputs(tmp_path):
    state = authors_state_dict(feature_dim=6, num_classes=4, hidden=9)
    model = load_checkpoint(save(state, tmp_path / "model_best.pkl"), 6, 4, hidden=9, dropout=0.7)
    assert not model.training
    lengths = [7, 1, 3]
    videos = [torch.randn(t, 6) for t in lengths]
    with torch.no_grad():
        _, probs = model(torch.cat(videos), Packing.of(lengths))
    cas = fused_cas(probs)
    start = 0
    for video in videos:
        torch.testing.assert_close(cas[start:start + len(video)], conv1d_reference(state, video), rtol=1e-5,
                                   atol=1e-6)
        start += len(video)


def test_written_checkpoints_are_in_the_authors_layout_and_load_back(tmp_path):
    torch.manual_seed(0)
    model = LACPNet(5, 3, hidden=8)
    save_checkpoint(tmp_path / "lacp_model.pt", model)
    state = torch.load(tmp_path / "lacp_model.pt", weights_only=True)
    assert {k: list(v.shape) for k, v in state.items()} == {CONV_WEIGHT: [8, 5, 3], CONV_BIAS: [8],
                                                           CLASSIFIER_WEIGHT: [4, 8, 1]}
    again = load_checkpoint(tmp_path / "lacp_model.pt", 5, 3, hidden=8, dropout=0.7)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    first = (tmp_path / "lacp_model.pt").read_bytes()
    save_checkpoint(tmp_path / "other_name.pt", model)
    assert (tmp_path / "other_name.pt").read_bytes() == first  # the same weights give the same bytes
    assert to_authors_state_dict(model)[CONV_WEIGHT].is_contiguous()


def test_a_state_dict_with_other_keys_and_shapes_is_refused_in_one_message(tmp_path):
    state = authors_state_dict(6, 4, 9)
    state["module.extra"] = torch.zeros(1)
    del state[CONV_BIAS]
    state[CLASSIFIER_WEIGHT] = torch.zeros(8, 9, 1)  # a dataset with 7 classes
    with pytest.raises(DataError) as error:
        load_checkpoint(save(state, tmp_path / "m.pkl"), 6, 4, hidden=9, dropout=0.7)
    message = str(error.value)
    assert "\n" not in message and "locate.checkpoint" in message
    assert f"missing keys ['{CONV_BIAS}']" in message
    assert "unexpected keys ['module.extra']" in message
    assert f"{CLASSIFIER_WEIGHT} has shape [8, 9, 1], expected [5, 9, 1]" in message


def test_feature_dimension_mismatch_is_named(tmp_path):
    path = save(authors_state_dict(2048, 20, 16), tmp_path / "m.pkl")
    with pytest.raises(DataError, match=r"cls_module.conv_1.0.weight has shape \[16, 2048, 3\], expected \[16, 1024, 3\]"):
        load_checkpoint(path, 1024, 20, hidden=16, dropout=0.7)


@pytest.mark.parametrize("content", ["not a torch file", "pickled object", "a tensor", "a list"])
def test_a_file_that_is_not_a_state_dict_gets_one_clear_line(tmp_path, content):
    path = tmp_path / "m.pkl"
    if content == "not a torch file":
        path.write_bytes(b"<html>Google Drive virus scan warning</html>")
    elif content == "pickled object":  # arbitrary objects are never unpickled (weights_only=True)
        path.write_bytes(pickle.dumps(io.BytesIO(b"x")))
    elif content == "a tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save([torch.zeros(3)], path)
    with pytest.raises(DataError) as error:
        load_checkpoint(path, 6, 4, hidden=9, dropout=0.7)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="is not a file"):
        load_checkpoint(tmp_path / "absent.pkl", 6, 4, hidden=9, dropout=0.7)


def test_a_checkpoint_source_stays_the_file_it_is(tmp_path):
    """A torch checkpoint is a zip archive; fetched as `locate.checkpoint` it must not be unpacked."""
    from tspnet.sources import materialize, parse_source

    path = save(authors_state_dict(6, 4, 9), tmp_path / "model_best.pkl")
    source = parse_source(str(path), "locate.checkpoint")
    assert materialize(source, progress=False, unpack=False) == path.resolve()
    load_checkpoint(materialize(source, progress=False, unpack=False), 6, 4, hidden=9, dropout=0.7)
