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


@pytest.mark.parametrize("batch", [7, 50, 1000])
def test_streamed_inference_gives_the_heads_of_the_whole_split(batch):
    # infer never holds every proposal's network input: parts arrive in row order and are forwarded
    # `batch` rows at a time, the same forwards `predict` makes over the whole tensor. Bit-identical
    # when a row is a multiple of 64 bytes (D = 16 here; 128 and 2048 in the pipeline): the CPU's
    # GEMM rounds differently for inputs at other alignments.
    from tspnet.train import predict, predict_parts

    torch.manual_seed(0)
    model = TSPNet(16, 3).eval()
    pooled = torch.randn(173, 48)
    bounds = [0, 5, 5, 40, 41, 120, 173]  # uneven parts, one empty
    parts = ((slice(a, b), pooled[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    streamed, whole = predict_parts(model, parts, len(pooled), batch), predict(model, pooled, batch)
    for name in ("cls", "attention", "center"):
        assert torch.equal(getattr(streamed, name), getattr(whole, name)), name


def test_postprocessing_by_groups_of_videos_gives_the_same_detections():
    from tspnet import postprocess
    from tspnet.proposals import Proposals

    rng = np.random.default_rng(0)
    counts = [30, 0, 55, 3, 80, 12]
    video = np.repeat(np.arange(len(counts)), counts)
    start = rng.uniform(0, 50, len(video))
    proposals = Proposals([f"v{i}" for i in range(len(counts))], video, start, start + rng.uniform(0.5, 15, len(video)),
                          rng.integers(0, 3, len(video)), rng.random(len(video)))
    probs = rng.dirichlet(np.ones(4), len(video))
    attention, center = rng.random(len(video)), rng.random(len(video))
    params = {"class_threshold": 0.1, "aba_iou": 0.4, "nms_sigma": 0.3}
    whole = postprocess.localize(video, proposals.segments, probs, attention, center, **params)
    for rows in (1, 60, 10_000):
        grouped = pipeline.localize_by_videos(proposals, probs, attention, center, params, rows_per_call=rows)
        for name in ("video", "label", "start", "end", "score"):
            assert np.array_equal(getattr(grouped, name), getattr(whole, name)), (rows, name)
