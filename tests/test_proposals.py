"""Import of a base locator's proposals: units, rounding, validation, grouping."""

import numpy as np
import pandas as pd
import pytest

from tspnet.datasets import DatasetInfo
from tspnet.files import DataError
from tspnet.proposals import Proposals, import_proposals


@pytest.fixture
def info():
    return DatasetInfo(name="toy", classes=("Jump", "Run"), feature_fps=25, snippet_frames=16,
                       feature_layout="lacp", videos={"train": ("a", "b"), "test": ("c",)},
                       num_snippets={"a": 100, "b": 50, "c": 80}, feature_dim=4)


def results(rows):
    return pd.DataFrame(rows, columns=["video", "label", "start", "end", "score"])


def test_seconds_become_rounded_snippets_grouped_by_video(info):
    table = results([("b", "Run", 0.64, 1.28, 0.5), ("a", "Jump", 19.2, 21.76, 0.9),
                     ("b", "Jump", 1.0, 2.0, -0.1), ("a", "Run", 0.003, 0.64, 1.17)])
    proposals, report = import_proposals(table, info, "train")
    # Video a first (manifest order), file order kept inside each video.
    assert proposals.video_index.tolist() == [0, 0, 1, 1]
    # 19.2 s -> 30.0, 21.76 s -> 34.0; 0.003 s -> 0.0046875 -> round(., 2) = 0.0; 1.0 s -> 1.5625 -> 1.56.
    np.testing.assert_array_equal(proposals.start, [30.0, 0.0, 1.0, 1.56])
    np.testing.assert_array_equal(proposals.end, [34.0, 1.0, 2.0, 3.12])
    assert proposals.label.tolist() == [0, 1, 1, 0]
    # Scores are kept as they are, negative and above 1 included.
    assert proposals.score.tolist() == [0.9, 1.17, 0.5, -0.1]
    assert report.imported == 4 and report.other_videos == 0


def test_other_split_videos_are_ignored_and_counted(info):
    table = results([("a", "Jump", 1.0, 2.0, 0.5), ("c", "Jump", 1.0, 2.0, 0.5), ("zzz", "Run", 1, 2, 1)])
    proposals, report = import_proposals(table, info, "train")
    assert len(proposals) == 1
    assert report.other_videos == 2 and report.ignored_video_names == ["c", "zzz"]
    assert report.videos_without_proposals == 1  # video b


def test_unknown_class_names_file_video_and_field(info):
    with pytest.raises(DataError, match=r"res\.json, video a, field 'label': unknown class 'Swim'"):
        import_proposals(results([("a", "Swim", 1.0, 2.0, 0.5)]), info, "train", source="res.json")


def test_outside_the_video_is_clipped_or_refused(info):
    # Video b has 50 snippets = 32 s. A proposal [30 s, 40 s] = [46.88, 62.5] snippets.
    table = results([("b", "Run", 30.0, 40.0, 0.5), ("b", "Run", 1.0, 2.0, 0.5)])
    proposals, report = import_proposals(table, info, "train", invalid="clip")
    assert report.clipped == 1
    assert proposals.end.max() == 50.0 and proposals.start[0] == 46.88
    with pytest.raises(DataError, match="lies outside the video"):
        import_proposals(table, info, "train", invalid="refuse")


def test_zero_length_proposals_are_dropped_and_counted(info):
    # Deliberate difference: the authors keep them and divide by zero in the center label and ABA.
    # 0.001 s -> 0.0015625 snippets -> rounds to 0.0: the same as its start.
    table = results([("a", "Jump", 0.0, 0.001, 0.5), ("a", "Jump", 2.0, 2.0, 0.5), ("a", "Jump", 1, 2, 0.5)])
    proposals, report = import_proposals(table, info, "train")
    assert report.zero_length == 2 and len(proposals) == 1


def test_save_and_load_round_trip(tmp_path, info):
    proposals, _ = import_proposals(results([("a", "Jump", 1.0, 2.0, 0.5), ("b", "Run", 3, 4, 0.1)]), info, "train")
    proposals.save(tmp_path / "p.npz")
    loaded = Proposals.load(tmp_path / "p.npz")
    assert loaded.videos == ["a", "b"]
    for name in ("video_index", "start", "end", "label", "score"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(proposals, name))
    assert [s.stop - s.start for s in loaded.video_slices()] == [1, 1]


def test_load_refuses_ungrouped_or_pickled_files(tmp_path):
    np.savez(tmp_path / "bad.npz", videos=np.array(["a", "b"]), video_index=np.array([1, 0]),
             start=np.zeros(2), end=np.ones(2), label=np.zeros(2, np.int64), score=np.zeros(2))
    with pytest.raises(DataError, match="not grouped by video"):
        Proposals.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", videos=np.array(["a", None], dtype=object), video_index=np.zeros(2, np.int64),
             start=np.zeros(2), end=np.ones(2), label=np.zeros(2, np.int64), score=np.zeros(2))
    with pytest.raises(DataError, match="cannot read"):
        Proposals.load(tmp_path / "obj.npz")
