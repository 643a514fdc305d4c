"""LACP training (LACP.md sections 3.4 and 5): data, sampling, the pseudo-label schedule, one step vs the loop."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.reference.lacp_train_loop import forward_loop, video_loss_loop
from tspnet import synthetic
from tspnet.datasets import Dataset
from tspnet.files import DataError
from tspnet.lacp import train as lacp_train
from tspnet.lacp.config import LACPConfig
from tspnet.lacp.losses import completeness_runs, sample_snippets
from tspnet.lacp.pseudo import select_seeds
from tspnet.lacp.train import (TrainingSet, VideoStream, build_optimizer, make_batch, point_matrix, refresh_period,
                               train_lacp, train_step, training_set, video_labels)

GENERATOR = dict(seed=3, train_videos=6, test_videos=3, stream_dim=8, duration_s=[20, 40],
                 duration_distribution="uniform", instances_per_video=[2, 4], instance_s=[3.0, 8.0],
                 classes_per_video=[1, 2], distractors_per_video=[1, 2], ambiguous_per_test_video=[0, 1],
                 video_fps=[30.0, 25.0], signal=4.0, runup=0.6, dips_per_action=[0, 2], dip_depth=0.8,
                 shared_motion=0.0, noise=1.0, noise_smoothing=3, drift=1.0)
SMALL = LACPConfig(hidden=16, iterations=6, videos_per_step=4, search_every=3)


def toy_dataset(root):
    config = synthetic.SyntheticConfig.from_params(GENERATOR)
    synthetic.generate(root, "toy", ["A", "B", "C"], 25.0, 16, config, [0.1, 0.5], True, progress=False)
    return Dataset(root)


def random_set(seed=0, videos=6, classes=4, dim=6):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, videos)
    points, labels = [], np.zeros((videos, classes), np.float32)
    for v, length in enumerate(lengths):
        chosen = rng.choice(classes, 2, replace=False)
        labels[v, chosen] = 1
        points.append(point_matrix(rng.integers(0, length, 3), rng.choice(chosen, 3), int(length), classes))
    features = torch.from_numpy(rng.normal(size=(int(lengths.sum()), dim)).astype(np.float32))
    return TrainingSet([f"v{i}" for i in range(videos)], features, np.cumsum(lengths) - lengths, lengths, points,
                       labels)


def test_points_land_on_their_floored_snippet_and_the_end_is_clamped():
    matrix = point_matrix(np.array([0, 2, 2, 5]), np.array([1, 0, 0, 1]), length=5, num_classes=2)
    expected = np.zeros((5, 2), np.float32)
    expected[0, 1] = expected[2, 0] = 1  # two points of one class on one snippet: a single 1
    expected[4, 1] = 1  # snippet 5 = T: a point on the video's very last frame goes to T-1
    np.testing.assert_array_equal(matrix, expected)


def test_training_set_from_a_dataset_leaves_out_videos_without_points(tmp_path):
    dataset = toy_dataset(tmp_path / "ds")
    videos = list(dataset.info.videos["train"])
    table = pd.read_csv(dataset.points_path)
    table[table["video_id"] != videos[1]].to_csv(dataset.points_path, index=False)
    data = training_set(dataset, show_progress=False)
    assert data.videos == [v for v in videos if v != videos[1]] and data.without_points == [videos[1]]
    points = dataset.points()
    first = points[points["video"] == videos[0]]
    expected = point_matrix(np.floor(first["time"].to_numpy()).astype(int), first["class_index"].to_numpy(),
                            int(data.lengths[0]), 3)
    np.testing.assert_array_equal(data.points[0], expected)
    truth = dataset.ground_truth("train")
    assert set(np.flatnonzero(data.labels[0])) == {"ABC".index(c) for c in truth[truth["video"] == videos[0]]["label"]}
    assert data.features.shape == (int(data.lengths.sum()), 16)


def test_video_labels_refuse_an_unknown_class():
    truth = pd.DataFrame({"video": ["a"], "label": ["Swim"], "start": [0.0], "end": [1.0]})
    with pytest.raises(DataError, match="'Swim' is not a class"):
        video_labels(truth, ["a"], ("Run", "Jump"))


def test_every_video_once_per_pass_with_a_full_batch_every_step():
    stream = VideoStream(200, 16, np.random.default_rng(0))
    drawn = np.concatenate([stream.next() for _ in range(25)])  # 400 = two passes; 16 per step throughout
    assert sorted(drawn[:200]) == list(range(200)) and sorted(drawn[200:]) == list(range(200))
    small = VideoStream(5, 16, np.random.default_rng(1))  # fewer videos than a step: whole passes, repeated
    drawn = np.concatenate([small.next() for _ in range(5)])
    assert len(drawn) == 80 and all(sorted(drawn[i:i + 5]) == list(range(5)) for i in range(0, 80, 5))


def test_refresh_period_of_the_authors_loader():
    loader = dataclasses.replace(SMALL, videos_per_step=16, label_refresh="loader")
    assert refresh_period(loader, 200) == 12
    assert refresh_period(loader, 10) == 1  # the authors divide by zero here
    assert refresh_period(dataclasses.replace(loader, label_refresh="search"), 200) == 1


def empty_search(model, data, config, bf16=False, show_progress=False):
    return [completeness_runs(np.zeros_like(p), []) for p in data.points]


@pytest.mark.parametrize("refresh, expected", [
    # LACP.md 3.4, 200 videos, 16 per step: off for 1-12, then search 10 from 13, 20 from 25, 30 from 37,
    # 40 from 49 and 60 from 61 (the search at 50 is never used).
    ("loader", {1: 0, 12: 0, 13: 10, 24: 10, 25: 20, 37: 30, 49: 40, 60: 40, 61: 60, 72: 60}),
    ("search", {1: 0, 10: 0, 11: 10, 20: 10, 21: 20, 51: 50, 61: 60, 72: 70}),
])
def test_pseudo_labels_reach_the_loss_on_the_authors_schedule(monkeypatch, refresh, expected):
    monkeypatch.setattr(lacp_train, "search_pass", empty_search)
    data = random_set(videos=48, dim=3)  # 48 videos, 4 per step: the same period 12 as 200 and 16
    config = dataclasses.replace(SMALL, hidden=4, iterations=72, videos_per_step=4, search_every=10,
                                 label_refresh=refresh)
    result = train_lacp(data, config, seed=0, show_progress=False)
    assert result.searches == 7
    seen = {record["step"]: record["labels_from"] for record in result.history}
    assert {step: seen[step] for step in expected} == expected


def test_training_is_deterministic_and_the_seed_matters():
    data = random_set()
    weights = [train_lacp(data, SMALL, seed, show_progress=False).model.state_dict() for seed in (0, 0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["embed.weight"], weights[2]["embed.weight"])


def test_a_step_equals_the_authors_per_video_loop(monkeypatch):
    """Batched loss terms and gradients against one-video forwards and the literal loss walk (dropout off)."""
    data = random_set(seed=2)
    rng = np.random.default_rng(3)
    pseudo = [(rng.random(p.shape) < 0.4).astype(np.float32) for p in data.points]
    visible = [completeness_runs(q, np.flatnonzero(l)) for q, l in zip(pseudo, data.labels)]
    visible[1] = None  # not visible yet
    for mode in ("last_class", "sum"):
        config = dataclasses.replace(SMALL, dropout=0.0, feature_contrast=mode)
        torch.manual_seed(0)
        model = lacp_train.LACPNet(6, 4, config.hidden, 0.0)
        batch = make_batch(data, np.array([0, 1, 2, 3, 4, 5, 0]), visible, config, torch.device("cpu"))
        drawn = sample_snippets(batch.runs.feature_first, batch.runs.feature_last, 3, np.random.default_rng(9))
        table = {key: row for key, row in zip(zip(batch.runs.feature_video.tolist(), batch.runs.feature_class.tolist(),
                                                  batch.runs.feature_first.tolist(), batch.runs.feature_last.tolist()),
                                              drawn)}
        terms = lacp_train.loss_terms(model, batch, config, np.random.default_rng(9))
        loss = lacp_train.total_loss(terms, config)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        per_video = []
        for b, v in enumerate(batch.videos.tolist()):
            start = int(data.offsets[v])
            features = data.features[start:start + int(data.lengths[v])]
            labels = torch.from_numpy(data.labels[v])
            score, fused, embedding = forward_loop(model, features, labels, config.r_act)
            samples = lambda c, s, e, b=b: table.get((b, c, s, e), np.array([s, s, e]))  # noqa: E731
            per_video.append(video_loss_loop(score, fused, embedding, labels, torch.from_numpy(data.points[v]),
                                             None if visible[v] is None else torch.from_numpy(pseudo[v]),
                                             select_seeds, samples, config.loss_weights, feature_mode=mode))
        for name, values in terms.items():
            torch.testing.assert_close(values, torch.stack([p[name] for p in per_video]).float(), rtol=1e-5,
                                       atol=1e-6)
        reference = torch.stack([p["total"] for p in per_video]).mean()
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
        for got, expected in zip(grads, torch.autograd.grad(reference, list(model.parameters()))):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        assert terms["score_contrast"][1] == 0 and terms["feature_contrast"][1] == 0  # no labels yet


def test_a_step_updates_the_weights_with_the_authors_adam():
    data = random_set()
    torch.manual_seed(0)
    model = lacp_train.LACPNet(6, 4, 16, 0.7)
    optimizer = build_optimizer(model, SMALL)
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 5e-4
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    before = model.classifier.weight.detach().clone()
    record = train_step(model, optimizer, make_batch(data, np.arange(4), [None] * 6, SMALL, torch.device("cpu")),
                        SMALL, np.random.default_rng(0))
    assert set(record) == {"video", "point", "background", "score_contrast", "feature_contrast", "loss"}
    assert not torch.equal(before, model.classifier.weight)


def test_training_with_the_search_runs_and_gives_completeness_terms():
    data = random_set(videos=5)
    result = train_lacp(data, dataclasses.replace(SMALL, iterations=5, search_every=2), seed=0, show_progress=False)
    assert result.searches == 2 and len(result.history) == 5
    assert result.history[2]["labels_from"] == 2  # 5 videos < 4 per step * 2: labels visible the next step
    assert any(r["score_contrast"] > 0 for r in result.history[2:])


def test_params_file_defaults_are_the_authors_hyperparameters():
    params = yaml.safe_load(open("params.yaml"))["locate"]
    config = LACPConfig.from_params(params["lacp"])
    assert config == dataclasses.replace(LACPConfig(), cas_thresholds=config.cas_thresholds,
                                         agnostic_thresholds=config.agnostic_thresholds)
    assert config.loss_weights == (1.0, 0.5, 1.0, 1.0, 1.0)
    assert (config.hidden, config.dropout, config.r_act, config.iterations, config.videos_per_step) == (
        2048, 0.7, 8, 2000, 16)
    assert (config.lr, config.weight_decay, config.search_every, config.budget) == (1e-4, 5e-4, 10, 25)
    assert (config.bkg_threshold, config.act_threshold, config.class_threshold, config.scale) == (0.95, 0.1, 0.5, 24)
    assert (config.nms_iou, config.video_score_weight, config.temperature, config.samples_per_run) == (0.7, 0.2, 0.1, 3)
    assert params["method"] in ("builtin", "lacp") and params["checkpoint"] is None


@pytest.mark.parametrize("key, value, message", [
    ("label_refresh", "never", "locate.lacp.label_refresh: must be one of"),
    ("feature_contrast", "mean", "locate.lacp.feature_contrast: must be one of"),
    ("iterations", 0, "locate.lacp.iterations: must be an integer of at least 1"),
    ("dropout", 1.0, "locate.lacp.dropout"),
    ("loss_weights", {"video": 1.0}, "locate.lacp.loss_weights: expected a mapping"),
    ("nms_proposals", "no", "locate.lacp.nms_proposals: must be true or false"),
    ("typo_key", 1, "unknown keys"),
])
def test_bad_lacp_params_get_one_line_naming_the_key(key, value, message):
    params = dict(yaml.safe_load(open("params.yaml"))["locate"]["lacp"])
    params[key] = value
    with pytest.raises(DataError, match=message):
        LACPConfig.from_params(params)


def test_points_of_the_real_thumos14_training_split(shared_data, tmp_path, cache):
    """Real THUMOS14 annotations with stand-in features as long as the W-TALC durations: every point lands on
    the snippet the authors' `int(point * 25 / (fps * 16))` gives it, and every video's labels are its classes."""
    import json

    from tests.test_real_data import local_entry
    from tspnet.fetch import fetch_dataset

    names = [n.decode() for n in np.load(shared_data / "thumos14/annotations_npy/videoname.npy")]
    seconds = dict(zip(names, np.load(shared_data / "thumos14/annotations_npy/duration.npy").ravel().tolist()))
    database = json.loads((shared_data / "thumos14/gt.json").read_text())["database"]
    for video, entry in database.items():
        for stream in ("rgb", "flow"):
            folder = tmp_path / "features" / entry["subset"] / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{video}.npy", np.zeros((int(seconds[video] * 25 / 16), 1), np.float32))
    entry = local_entry(shared_data)
    entry["feature_dim"] = 2
    entry["sources"]["features"] = str(tmp_path)
    fetch_dataset("thumos14", entry, tmp_path / "ds", progress=False)
    data = training_set(Dataset(tmp_path / "ds"), show_progress=False)
    assert len(data) == 200 and data.without_points == []

    table = pd.read_csv(shared_data / "thumos14/point_labels.csv")
    fps = json.loads((shared_data / "thumos14/fps.json").read_text())
    expected = {v: np.zeros((int(t), 20), np.float32) for v, t in zip(data.videos, data.lengths)}
    for video, point, klass in zip(table["video_id"], table["point"], table["class_index"]):
        expected[video][min(int(point * (25 / (fps[video] * 16))), len(expected[video]) - 1), klass] = 1
    for video, matrix in zip(data.videos, data.points):
        np.testing.assert_array_equal(matrix, expected[video], err_msg=video)
    assert int(sum(m.sum() for m in data.points)) == 3003 - 5  # LACP.md 3.1: 5 cells merge two same-class points
    classes = {v: {a["label"] for a in database[v]["annotations"]} for v in data.videos}
    names = yaml.safe_load(open("params.yaml"))["datasets"]["thumos14"]["classes"]
    assert all({names[c] for c in np.flatnonzero(row)} == classes[v] for v, row in zip(data.videos, data.labels))
