"""The embedded synthetic dataset: THUMOS14's files and units, deterministic, with the intended structure."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tspnet import synthetic
from tspnet.datasets import Dataset
from tspnet.pipeline import split_ground_truth
from tspnet.postprocess import read_ambiguous

CLASSES = ["A", "B", "C"]
GENERATOR = dict(seed=3, train_videos=6, test_videos=6, stream_dim=16, duration_s=[30, 60],
                 duration_distribution="uniform", instances_per_video=[2, 4], instance_s=[3.0, 8.0],
                 classes_per_video=[1, 2], distractors_per_video=[1, 2], ambiguous_per_test_video=[1, 1],
                 video_fps=[30.0, 25.0], signal=4.0, runup=0.6, dips_per_action=[0, 2], dip_depth=0.8,
                 shared_motion=0.0, noise=1.0, noise_smoothing=3, drift=1.0)


def generate(root, **overrides):
    config = synthetic.SyntheticConfig.from_params({**GENERATOR, **overrides})
    return synthetic.generate(root, "toy", CLASSES, 25.0, 16, config, [0.1, 0.5], True, progress=False)


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    generate(tmp_path / "c", seed=4)
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_files_look_like_thumos14(tmp_path):
    info = generate(tmp_path)
    dataset = Dataset(tmp_path)
    assert dataset.info == info
    database = json.loads((tmp_path / "gt.json").read_text())["database"]
    assert {v["subset"] for v in database.values()} == {"train", "test"}
    points = pd.read_csv(tmp_path / "point_labels.csv")
    assert list(points.columns) == ["class", "class_index", "start_frame", "stop_frame", "video_id", "point"]
    fps = json.loads((tmp_path / "fps.json").read_text())
    for video, entry in database.items():
        # 16-frame snippets of the 25 fps video: T = int(duration * 25 / 16).
        assert info.num_snippets[video] == int(entry["duration"] * 25 / 16)
        features = dataset.read_features(entry["subset"], video)
        assert features.shape == (info.num_snippets[video], 32) and features.dtype == np.float32
        for annotation in entry["annotations"]:
            start, end = annotation["segment"]
            assert 0 <= start < end <= entry["duration"]
            assert round(start, 1) == start and round(end, 1) == end  # the 0.1 s grid of THUMOS14
    # One point per training instance, a frame index at the video's own fps, inside its instance.
    train_instances = sum(len(e["annotations"]) for e in database.values() if e["subset"] == "train")
    assert len(points) == train_instances
    for row in points.itertuples():
        assert row.start_frame <= row.point <= row.stop_frame
        assert row.start_frame == round(row.start_frame) and fps[row.video_id] in (30.0, 25.0)
        assert CLASSES[row.class_index] == row._1


def test_points_cluster_around_instance_middles(tmp_path):
    generate(tmp_path, train_videos=40, test_videos=1)
    points = pd.read_csv(tmp_path / "point_labels.csv")
    relative = (points["point"] - points["start_frame"]) / (points["stop_frame"] - points["start_frame"])
    # N(middle, length / 6): mean near 0.5, about 68% within +-1/6 of the middle.
    assert abs(relative.mean() - 0.5) < 0.05
    assert 0.55 < (np.abs(relative - 0.5) < 1 / 6).mean() < 0.8


def test_class_evidence_peaks_at_instance_centres(tmp_path):
    generate(tmp_path, train_videos=20, test_videos=1, noise=0.2, drift=0.0, dips_per_action=[0, 0], runup=0.0)
    dataset = Dataset(tmp_path)
    protos = synthetic.Prototypes(np.random.default_rng([GENERATOR["seed"], 99]), len(CLASSES), 16)
    gt = split_ground_truth(dataset, "train").instances
    centre, edge = [], []
    for row in gt.itertuples():
        rgb = dataset.read_features("train", row.video)[:, :16]
        evidence = rgb @ protos.rgb[CLASSES.index(row.label)]
        t = (np.arange(len(evidence)) + 0.5) * 16 / 25
        u = np.abs((t - (row.start + row.end) / 2) / ((row.end - row.start) / 2))
        centre += evidence[u < 0.25].tolist()
        edge += evidence[(u > 0.75) & (u <= 1.0)].tolist()
    assert np.mean(centre) > 2.0 * np.mean(edge) > 0


def test_ambiguous_segments_lie_in_test_backgrounds(tmp_path):
    generate(tmp_path)
    ambiguous = read_ambiguous(tmp_path / "ambiguous.txt")
    assert 0 < len(ambiguous) <= 6  # at most one per test video (dropped where the video is full)
    gt = split_ground_truth(Dataset(tmp_path), "test").instances
    for row in ambiguous.itertuples():
        assert row.video.startswith("synthetic_test_")
        own = gt[gt["video"] == row.video]
        assert ((own["end"] <= row.start) | (own["start"] >= row.end)).all()


def test_bad_generator_params_are_refused():
    with pytest.raises(ValueError, match="duration_s"):
        synthetic.SyntheticConfig.from_params({**GENERATOR, "duration_s": [60, 30]})
    with pytest.raises(ValueError, match="duration_distribution"):
        synthetic.SyntheticConfig.from_params({**GENERATOR, "duration_distribution": "normal"})
