"""tspnet.sfnet: SF-Net's single-frame files, the annotator draw and the conversion to the point table,
by hand, and against SF-Net's loader structure (tests/reference/sfnet_loop.py) on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.reference.sfnet_loop import sfnet_frame_labels
from tspnet import sfnet, units
from tspnet.files import DataError


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ----------------------------------------------------------------------------- the annotator draw


def test_the_draw_sequence_for_seed_1_is_sf_nets():
    # LACP.md section 8: with sorted names and seed 1 the slots run 1,3,0,0,3,1,3,1,3,0,...
    assert sfnet.annotator_draws([f"v{i}" for i in range(10)], 4, seed=1) == [1, 3, 0, 0, 3, 1, 3, 1, 3, 0]


def test_the_draw_equals_seeding_the_global_generator_once():
    saved = np.random.get_state()
    try:
        np.random.seed(7)
        expected = [int(np.random.choice(range(4))) for _ in range(40)]  # SF-Net's own call
    finally:
        np.random.set_state(saved)
    assert sfnet.annotator_draws(["v"] * 40, 4, seed=7) == expected


def test_test_videos_consume_draws_and_order_decides():
    # Order a, b, c draws 1, 3, 0 (seed 1); a is a test video: b and c keep the 2nd and 3rd draws.
    choice = sfnet.choose_annotators("random", 4, 1, ["a", "b", "c"], ["c", "b"], "k.annotator", "k.order")
    assert choice == {"c": 0, "b": 3}


def test_a_fixed_annotator_takes_one_file_for_every_video():
    assert sfnet.choose_annotators(2, 4, 1, None, ["x", "y"], "k.annotator", "k.order") == {"x": 1, "y": 1}
    with pytest.raises(DataError, match=r"k.annotator: annotator 5 chosen, but there are 4 single-frame files"):
        sfnet.choose_annotators(5, 4, 1, None, ["x"], "k.annotator", "k.order")


def test_a_video_without_a_draw_is_refused():
    with pytest.raises(DataError, match=r"k.order: video z is not listed \(1 video"):
        sfnet.choose_annotators("random", 4, 1, ["x", "y"], ["x", "z"], "k.annotator", "k.order")
    with pytest.raises(DataError, match=r"k.order is not set"):
        sfnet.choose_annotators("random", 4, 1, None, ["x"], "k.annotator", "k.order")


@pytest.mark.parametrize("value, expected", [("random", "random"), (1, 1), (4, 4)])
def test_parse_annotator(value, expected):
    assert sfnet.parse_annotator(value, "k") == expected


@pytest.mark.parametrize("value", [0, -1, "1", True, 1.0, "first", None])
def test_parse_annotator_rejects(value):
    with pytest.raises(ValueError, match="k: expected 'random' or an annotator number"):
        sfnet.parse_annotator(value, "k")


# ----------------------------------------------------------------------------- reading the files


def test_single_frame_files_with_blank_lines_crlf_and_spaces(tmp_path: Path):
    path = write(tmp_path / "BEOID1.txt", "00_Desk2,11.584469,pick-up_plug\n\n 00_Desk2 , 16.7 ,plug_plug \n\n",
                 newline="\r\n")
    frames = sfnet.read_single_frames(path)
    assert frames.video == ("00_Desk2", "00_Desk2") and frames.label == ("pick-up_plug", "plug_plug")
    assert frames.seconds.tolist() == [11.584469, 16.7] and frames.line == (1, 3)


@pytest.mark.parametrize("text, message", [
    ("v,1.0,take\n\nv,1.0\n", r"line 3: expected `video,seconds,class`, got 'v,1.0'"),
    ("v,1.0,take\nv,1.0,take,extra\n", r"line 2: expected `video,seconds,class`"),
    ("v,soon,take\n", r"line 1, video v: 'soon' is not a time in seconds >= 0"),
    ("v,-0.5,take\n", r"line 1, video v: '-0.5' is not a time in seconds >= 0"),
    ("v,nan,take\n", r"line 1, video v: 'nan' is not a time"),
    ("\n\n", r"no points"),
])
def test_malformed_single_frame_files_name_the_line(tmp_path: Path, text: str, message: str):
    with pytest.raises(DataError, match=message):
        sfnet.read_single_frames(write(tmp_path / "GTEA1.txt", text))


def test_video_order_from_a_videoname_npy(tmp_path: Path):
    np.save(tmp_path / "videoname.npy", np.array([b"S1_Cheese_C1", b"S2_Tea_C1"]))
    assert sfnet.read_video_order(tmp_path / "videoname.npy") == ["S1_Cheese_C1", "S2_Tea_C1"]
    np.save(tmp_path / "numbers.npy", np.arange(3))
    with pytest.raises(DataError, match="expected an array of video names"):
        sfnet.read_video_order(tmp_path / "numbers.npy")


# ----------------------------------------------------------------------------- the conversion


def test_points_become_frames_by_hand(tmp_path: Path):
    # GTEA-like video g at 15 fps, 3 snippets of 16 frames; BEOID-like video b at 30 fps, 40 snippets.
    first = sfnet.read_single_frames(write(tmp_path / "A1.txt", "g,1.547714,take\ng,3.19,open\ng,3.2,put\n"
                                                                "b,11.584469,take\nt,1.0,take\n"))
    second = sfnet.read_single_frames(write(tmp_path / "A2.txt", "g,2.0,stir\n"))
    converted = sfnet.point_table([first, second], {"g": 0, "b": 0}, ["stir", "open", "put", "take"],
                                  {"g": 15.0, "b": 30.0}, feature_fps=15.0, snippet_frames=16,
                                  lengths={"g": 3.0, "b": 40.0})
    table = converted.table
    # g: 1.547714 s * 15 = 23.2157 -> frame 23 (snippet 23/16 = 1.44; SF-Net: int(23.2157 / 16) = 1);
    #    3.19 s -> 47.85 -> 47 (2.94 < 3, kept); 3.2 s -> 48 -> 48/16 = 3.0, not below T = 3: dropped
    #    (SF-Net: int(3.2 * 15 / 16) = 3 >= 3). b: 11.584469 s * 30 = 347.53 -> frame 347.
    #    t is not a training video of this choice: not used.
    assert table["video_id"].tolist() == ["g", "g", "b"]
    assert table["point"].tolist() == [23, 47, 347]
    assert table["start_frame"].tolist() == table["point"].tolist() == table["stop_frame"].tolist()
    assert table["class"].tolist() == ["take", "open", "take"] and table["class_index"].tolist() == [3, 1, 3]
    assert (converted.past_end, converted.other_videos) == (1, 1)


def test_unknown_class_names_the_file_and_line(tmp_path: Path):
    frames = sfnet.read_single_frames(write(tmp_path / "A1.txt", "g,1.0,take\n\ng,2.0,dance\n"))
    with pytest.raises(DataError, match=r"A1.txt, line 3, video g, field 'class': unknown class 'dance'"):
        sfnet.point_table([frames], {"g": 0}, ["take"], {"g": 15.0}, 15.0, 16, None)


def test_the_stored_frame_keeps_sf_nets_snippet():
    # The module's claim: floor(floor(x) / 16) == floor(x / 16) for x >= 0, computed as SF-Net computes x.
    rng = np.random.default_rng(0)
    seconds = np.concatenate([rng.uniform(0, 400, 20000), np.arange(0, 50, 1 / 15), np.arange(0, 50, 16 / 30)])
    for fps in (15, 30, 29.97, 25):
        frames = np.floor(seconds * fps)
        ours = np.floor(units.frames_to_snippets(frames, fps, fps, 16))  # what later stages compute
        theirs = np.array([int(s * fps / 16) for s in seconds])
        assert np.array_equal(ours, theirs), fps


@pytest.mark.parametrize("name, upper, annotator", [("gtea", "GTEA", "random"), ("beoid", "BEOID", "random"),
                                                     ("gtea", "GTEA", 3)])
def test_real_files_give_sf_nets_labels(shared_data: Path, name: str, upper: str, annotator):
    """The converted table, read back as snippets, equals SF-Net's labels video by video."""
    root = shared_data / name
    gt = json.loads((root / "groundtruth.json").read_text())["database"]
    order = sfnet.read_video_order(root / "annotations_npy/videoname.npy")
    train = [v for v, e in gt.items() if e["subset"] == "training"]
    fps = {v: float(e["fps"]) for v, e in gt.items()}
    # Feature rows a little short of some videos' ends, so that the drop rule is exercised.
    num_snippets = {v: max(1, e["num_frames"] // 16 - 4 * (i % 3)) for i, (v, e) in enumerate(gt.items())}
    classes = [c.decode() for c in np.load(root / "annotations_npy/classlist.npy")]
    paths = [root / "single_frames" / f"{upper}{k}.txt" for k in (4, 2, 1, 3)]  # any order: sorted by name
    files = [sfnet.read_single_frames(p) for p in sorted(paths, key=lambda p: p.name)]
    choice = sfnet.choose_annotators(annotator, len(files), 1, order, train, "a", "o")
    converted = sfnet.point_table(files, choice, classes, fps, fps[train[0]], 16,
                                  {v: float(num_snippets[v]) for v in train})
    table = converted.table
    snippets = np.floor(units.frames_to_snippets(table["point"].to_numpy(), table["video_id"].map(fps).to_numpy(),
                                                 fps[train[0]], 16))
    ours = {v: [] for v in train}
    for video, snippet, index in zip(table["video_id"], snippets.astype(int), table["class_index"]):
        ours[video].append((snippet, index))
    if annotator == "random":
        expected = sfnet_frame_labels(paths, order, set(train), fps, num_snippets, classes, seed=1)
    else:
        only = [root / "single_frames" / f"{upper}{annotator}.txt"]
        expected = sfnet_frame_labels(only, order, set(train), fps, num_snippets, classes, seed=1)
    assert ours == expected
    assert converted.past_end > 0 and len(table) + converted.past_end == sum(
        sum(v == video for v in files[choice[video]].video) for video in train)
