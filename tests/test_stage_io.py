"""What the stages read and write: units of detections, the model file, the feature cache."""

import numpy as np
import pytest
import torch

from tspnet import pipeline
from tspnet.files import DataError
from tspnet.model import TSPNet, proposal_features
from tspnet.postprocess import Detections


def test_detections_are_written_in_seconds():
    # Deliberate difference: the authors write snippet units under ActivityNet keys.
    detections = Detections(video=np.array([1, 0]), label=np.array([0, 1]), start=np.array([30.0, 1.0]),
                            end=np.array([34.0, 2.5]), score=np.array([0.9, 0.1]))
    table = pipeline.detections_table(detections, ["v0", "v1"], ("Jump", "Run"), snippets_per_second=25 / 16)
    assert table["video"].tolist() == ["v1", "v0"] and table["label"].tolist() == ["Jump", "Run"]
    np.testing.assert_allclose(table["start"], [19.2, 0.64])
    np.testing.assert_allclose(table["end"], [21.76, 1.6])


def test_model_file_round_trip_and_safe_loading(tmp_path):
    torch.manual_seed(0)
    model = TSPNet(8, 3)
    pipeline.save_model(tmp_path / "model.pt", model)
    loaded = pipeline.load_model(tmp_path / "model.pt")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    pipeline.save_model(tmp_path / "again.pt", model)
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()  # same bytes
    torch.save({"weights": object()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt: holds Python objects") as info:  # weights_only=True refuses them
        pipeline.load_model(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(info.value)
    with pytest.raises(DataError, match="not a TSPNet checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "empty.pt")
        pipeline.load_model(tmp_path / "empty.pt")


def test_the_feature_cache_does_not_depend_on_how_videos_are_chunked():
    # Deliberate difference (allowed): features are read once and the network inputs cached; the
    # values must equal those computed video by video.
    rng = np.random.default_rng(0)
    lengths = [7, 30, 1, 55]
    features = torch.from_numpy(rng.standard_normal((sum(lengths), 6)).astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    video = rng.integers(0, len(lengths), 40)
    starts = rng.uniform(0, 1, 40) * np.array(lengths)[video]
    segments = torch.from_numpy(np.stack([starts, starts + rng.uniform(0.1, 20, 40)], 1))
    together = proposal_features(features, segments, torch.from_numpy(offsets[video]),
                                 torch.tensor(lengths)[video])
    for v, (offset, length) in enumerate(zip(offsets, lengths)):
        rows = np.flatnonzero(video == v)
        alone = proposal_features(features[offset:offset + length], segments[rows],
                                  torch.zeros(len(rows), dtype=torch.long), torch.full((len(rows),), length))
        torch.testing.assert_close(together[rows], alone, rtol=1e-6, atol=1e-6)
