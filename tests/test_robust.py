"""Bad input gets one clear line, and nothing poisons a later run (issue 10).

The catalogue of bad inputs and faults a careless user (or a hostile file)
supplies -- params, data files, downloads, archives, model files, killed
and starved runs -- each as a test that asserts the one line the user sees
and that no output, temporary or cache file is left behind. Most run a
stage's script in-process (as `python stages/<name>.py` runs it) or the
library call behind it, on a tiny pipeline built once per session; the
kill -9 cases run the stages as subprocesses.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import pickle
import re
import runpy
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

from tests.loopback_http import LoopbackServer
from tests.test_archives import special as member
from tests.test_archives import tar_bytes, zip_bytes
from tests.test_fetch import make_entry
from tspnet import archives, sources
from tspnet.archives import UnpackLimits
from tspnet.datasets import Dataset
from tspnet.fetch import fetch_dataset
from tspnet.files import DataError, atomic_dir, write_json
from tspnet.sources import SourceError, materialize, parse_source

REPO = Path(__file__).resolve().parents[1]
DELETE = object()
# A pipeline that runs end to end in seconds; every stage's outputs exist for the cases to damage.
TINY = {
    "datasets.synthetic.generator.train_videos": 8,
    "datasets.synthetic.generator.test_videos": 4,
    "datasets.synthetic.generator.stream_dim": 8,
    "locate.builtin.epochs": 3,
    "train.iterations": 20,
    "train.update_every": 10,
    "train.log_every": 10,
}
STAGES = ["fetch", "locate", "evaluate_lacp", "proposals", "labels", "train", "infer", "evaluate_base",
          "evaluate"]


# ----------------------------------------------------------------------------- helpers


def set_params(repo: Path, edits: dict[str, Any]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in edits.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(name: str, repo: Path) -> tuple[int, list[str]]:
    """Run stages/<name>.py in-process from `repo`: (exit status, the error lines it logged)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    root = logging.getLogger()
    root.addHandler(handler)
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(repo)
    sys.argv = [f"stages/{name}.py"]
    try:
        runpy.run_path(str(REPO / "stages" / f"{name}.py"), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        os.chdir(cwd)
        sys.argv = argv
        root.removeHandler(handler)
    return code, [r.getMessage() for r in records]


def stage_subprocess(name: str, repo: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under the outputs (hidden temporaries included): size and mtime of each."""
    out = {}
    for top in ("data", "metrics", "plots"):
        for path in sorted((root / top).rglob("*")) if (root / top).exists() else []:
            info = path.lstat()
            out[path.relative_to(root).as_posix()] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return out


def leftovers(root: Path) -> list[str]:
    """Temporaries anywhere below `root` (atomic writes' .tmp/.old, downloads' .partial)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".old", ".partial", ".download")))


def cache_files(cache: Path) -> list[str]:
    """Every file in the download cache but its lock files."""
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")
                  if p.is_file() and p.name != ".lock") if cache.exists() else []


def one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "Traceback" not in message and "weights_only=False" not in message and "allow_pickle=True" not in message


def copy_built(built: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(built, repo, symlinks=True)
    return repo


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """A tiny copy of the pipeline with every stage run once, as subprocesses (the clean run to compare with)."""
    repo = tmp_path_factory.mktemp("built")
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    set_params(repo, TINY)
    for name in STAGES:
        process = stage_subprocess(name, repo)
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, (name, err.decode()[-3000:])
    return repo


# ----------------------------------------------------------------------------- params


SHA_ZEROS = ("sha256: " + "0" * 64, "sha256 of 64 zeros, unquoted")
PARAM_CASES = [
    # (stage, edits, what the line must say)
    ("infer", {"infer.class_threshold": 1.5}, "infer.class_threshold is 1.5, expected a number in [0, 1)"),
    ("labels", {"labels.soft_value": 1.7}, "labels.soft_value is 1.7, expected a number in [0, 1]"),
    ("train", {"train.lr": "abc"}, "train.lr is 'abc', expected a number > 0"),
    ("train", {"train.lr": "0.001"}, "train.lr is '0.001' (a string), expected a number > 0"),
    ("train", {"train.lr": -0.001}, "train.lr is -0.001, expected a number > 0"),
    ("train", {"train.batch_videos": 0}, "train.batch_videos is 0, expected an integer >= 1"),
    ("train", {"train.iterations": 0}, "train.iterations is 0, expected an integer >= 1"),
    ("train", {"train.iterations": -5}, "train.iterations is -5, expected an integer >= 1"),
    ("train", {"train.iterations": 2000.5}, "train.iterations is 2000.5, expected an integer >= 1"),
    ("infer", {"infer.nms_sigma": 0}, "infer.nms_sigma is 0, expected a number > 0"),
    ("evaluate_base", {"infer.nms_sigma": 0}, "infer.nms_sigma is 0, expected a number > 0"),
    ("infer", {"infer.aba_iou": 2.0}, "infer.aba_iou is 2.0, expected a number in [0, 1)"),
    ("train", {"train.lr": DELETE}, "train.lr is missing, expected a number > 0"),
    ("proposals", {"proposals.invalid": "maybe"}, "proposals.invalid is 'maybe', expected one of 'clip', 'refuse'"),
    ("locate", {"proposals.locator": "nosuch"}, "proposals.locator is 'nosuch', expected one of the entries of "
                                                "locators: builtin, tspnet_lacp, pmil, custom"),
    ("proposals", {"proposals.locator": "nosuch"}, "proposals.locator is 'nosuch', expected one of the entries"),
    ("locate", {"proposals.locator": "pmil"}, "proposals.locator is 'pmil', whose proposals belong to dataset "
                                              "'thumos14' (locators.pmil.dataset), but dataset is 'synthetic'"),
    ("proposals", {"proposals.locator": "pmil"},
     "proposals.locator is 'pmil', whose proposals belong to dataset 'thumos14'"),
    ("train", {"base.threads": -3}, "base.threads is -3, expected an integer >= 0"),
    ("train", {"base.device": "gpu"}, "base.device is 'gpu', expected auto, cpu, cuda or cuda:N"),
    ("infer", {"base.precision": "fp64"}, "base.precision is 'fp64', expected one of 'fp32', 'tf32', 'bf16'"),
    ("locate", {"base.seed": -1}, "base.seed is -1, expected an integer in [0, 4294967295]"),
    ("locate", {"locate.builtin.epochs": 0}, "locate.builtin.epochs is 0, expected an integer >= 1"),
    ("locate", {"locate.builtin.dropout": 1.0}, "locate.builtin.dropout is 1.0, expected a number in [0, 1)"),
    ("locate", {"locate.builtin.act_thresholds": [0.1, 1.2]}, "locate.builtin.act_thresholds[1] is 1.2, expected a number in (0, 1)"),
    ("train", {"train.colour": "red"}, "train.colour is not a key of train (known: iterations, "),
    ("labels", {"trian": {"lr": 1}}, "trian is not a params group (known: base, dataset, "),
    ("infer", {"infer": DELETE}, "infer is missing, expected a mapping with keys class_threshold, "),
    ("train", {"train.update_threshold": 2}, "train.update_threshold is 2, expected a number in [0, 1]"),
    ("train", {"train.rows_per_forward": True}, "train.rows_per_forward is True, expected an integer >= 1"),
    ("infer", {"infer.batch_proposals": 0}, "infer.batch_proposals is 0, expected an integer >= 1"),
    ("labels", {"labels.soft_value": float("nan")}, "labels.soft_value is nan, expected a number in [0, 1]"),
    ("proposals", {"proposals.max_per_video": 0}, "proposals.max_per_video is 0, expected an integer >= 1"),
    ("fetch", {"dataset": "nope"}, "dataset is 'nope', expected one of the entries of datasets: synthetic, "),
    ("fetch", {"datasets.synthetic.generator.duration_s": [120, 40]},
     "datasets.synthetic.generator.duration_s is [120.0, 40.0], expected [low, high] with low <= high"),
    ("fetch", {"datasets.synthetic.tiou_thresholds": [0.1, 1.5]},
     "datasets.synthetic.tiou_thresholds[1] is 1.5, expected a number in (0, 1]"),
    ("fetch", {"archives.max_ratio": 0.5}, "archives.max_ratio is 0.5, expected a number >= 1"),
    ("fetch", {"dataset": "thumos14", "datasets.thumos14.feature_layout": "i3d"},
     "datasets.thumos14.feature_layout is 'i3d', expected one of 'lacp', 'sfnet'"),
    ("fetch", {"dataset": "thumos14", "datasets.thumos14.sources.gt": {"url": "ftp://host/gt.json"}},
     "datasets.thumos14.sources.gt: unsupported scheme 'ftp' in 'ftp://host/gt.json' (use a path, http(s) or gdrive)"),
    ("fetch", {"dataset": "thumos14", "datasets.thumos14.source": "zenodo"},
     "datasets.thumos14.source is 'zenodo', expected one of 'synthetic', 'files'"),
    ("fetch", SHA_ZEROS, "datasets.thumos14.sources.gt.sha256: expected 64 hexadecimal digits in quotes, got the "
                         "number 0: YAML reads an unquoted checksum made of digits as a number; quote it"),
]


@pytest.mark.parametrize("stage, edits, expected", PARAM_CASES,
                         ids=[f"{c[0]}-{','.join(c[1]) if isinstance(c[1], dict) else c[1][1]}" for c in PARAM_CASES])
def test_bad_params_are_one_line_before_any_work(built: Path, tmp_path: Path, stage, edits, expected):
    repo = copy_built(built, tmp_path)
    if isinstance(edits, dict):
        set_params(repo, edits)
    else:  # raw YAML: what the user typed
        text = (repo / "params.yaml").read_text().replace("dataset: synthetic", "dataset: thumos14", 1)
        gt_sha = yaml.safe_load(text)["datasets"]["thumos14"]["sources"]["gt"]["sha256"]
        (repo / "params.yaml").write_text(text.replace(f"sha256: {gt_sha}", edits[0]))
    before = snapshot(repo)
    code, errors = run_stage(stage, repo)
    assert code == 2 and len(errors) == 1, errors
    one_line(errors[0], "params.yaml: " + expected)
    assert snapshot(repo) == before  # nothing rewritten, nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("stage", ["locate", "train", "infer"])
def test_cuda_without_cuda_is_one_line(built: Path, tmp_path: Path, stage):
    repo = copy_built(built, tmp_path)
    set_params(repo, {"base.device": "cuda"})
    before = snapshot(repo)
    code, errors = run_stage(stage, repo)
    assert code == 2
    one_line(errors[0], "base.device is 'cuda', but torch sees no CUDA device here: set base.device to auto or cpu")
    assert snapshot(repo) == before


def test_a_params_file_that_is_not_yaml(built: Path, tmp_path: Path):
    repo = copy_built(built, tmp_path)
    (repo / "params.yaml").write_text("train: {lr: [unclosed\n")
    code, errors = run_stage("train", repo)
    assert code == 2
    one_line(errors[0], "params.yaml: not valid YAML")


# ----------------------------------------------------------------------------- data files at fetch


def damage(relpath: str, how: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda src: how(src / relpath)


def save_array(array: np.ndarray, **kwargs) -> Callable[[Path], None]:
    return lambda path: np.save(path, array, **kwargs)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def replace_text(old: str, new: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(path.read_text().replace(old, new))


RGB = "pack/features/test/rgb/tst_2.npy"  # 20 snippets x 3 dims
HEADER = "class,class_index,start_frame,stop_frame,video_id,point\n"
FETCH_CASES = [
    ("empty npy", damage(RGB, lambda p: p.write_bytes(b"")), "tst_2.npy: the file is empty"),
    ("text named .npy", damage(RGB, lambda p: p.write_text("not numpy")), "tst_2.npy: not a .npy array (it starts"),
    ("pickled npy", damage(RGB, save_array(np.array([{"x": 1}], dtype=object), allow_pickle=True)),
     "tst_2.npy: holds Python objects (a pickled array), which this project never unpickles"),
    ("truncated npy", damage(RGB, truncate), "tst_2.npy: damaged or truncated .npy array"),
    ("NaN", damage(RGB, save_array(np.full((20, 3), np.nan, np.float32))),
     "tst_2.npy, video tst_2: features contain NaN or infinity (first at snippet 0)"),
    ("infinity", damage(RGB, save_array(np.where(np.arange(60).reshape(20, 3) == 31, np.inf, 0).astype(np.float32))),
     "tst_2.npy, video tst_2: features contain NaN or infinity (first at snippet 10)"),
    ("integer features", damage(RGB, save_array(np.zeros((20, 3), np.int32))),
     "field 'dtype': expected floating point"),
    ("1-D features", damage(RGB, save_array(np.zeros(60, np.float32))), "field 'shape': expected [snippets, dims]"),
    ("dims", damage(RGB, save_array(np.zeros((20, 4), np.float32))),
     "4 dims, but video val_1 has 3 in the same stream"),
    ("stream lengths", damage("pack/features/test/flow/tst_2.npy", save_array(np.zeros((19, 2), np.float32))),
     "flow/tst_2.npy, video tst_2, field 'shape': 19 snippets, but test/rgb/tst_2.npy has 20"),
    ("missing feature file", damage(RGB, Path.unlink), "tst_2.npy, video tst_2: feature file not found"),
    ("header-only points", damage("points.csv", lambda p: p.write_text(HEADER)),
     "points.csv: no point labels for the dataset's training videos"),
    ("points of excluded videos only",
     damage("points.csv", lambda p: p.write_text(HEADER + "Run,1,30,60,val_bad,40\n")),
     "points.csv: no point labels for the dataset's training videos"),
    ("points unknown class", damage("points.csv", lambda p: p.write_text(HEADER + "Swim,0,1,2,val_1,1\n")),
     "points.csv, video val_1, field 'class', row 2: unknown class"),
    ("points fractional frame", damage("points.csv", lambda p: p.write_text(HEADER + "Jump,0,1,2,val_1,1.5\n")),
     "points.csv, video val_1, field 'point', row 2: not an integer"),
    ("points missing column", damage("points.csv", lambda p: p.write_text("class,video_id\nJump,val_1\n")),
     "points.csv: missing columns ['class_index', 'start_frame', 'stop_frame', 'point']"),
    ("points video of the test split", damage("points.csv", lambda p: p.write_text(HEADER + "Jump,0,1,2,tst_1,1\n")),
     "points.csv, video tst_1, field 'video_id', row 2: video is not in the training split"),
    ("gt not JSON", damage("gt.json", lambda p: p.write_text("{nope")), "gt.json: not valid JSON"),
    ("gt without database", damage("gt.json", lambda p: p.write_text("{}")),
     "gt.json: expected a JSON object with a 'database' object"),
    ("gt segment reversed", damage("gt.json", replace_text('["2.0", "6.0"]', '["6.0", "2.0"]')),
     "gt.json, video val_1, field 'annotations[0].segment': end 2.0 is before start 6.0"),
    ("gt segment not a number", damage("gt.json", replace_text('["2.0", "6.0"]', '["two", "6.0"]')),
     "gt.json, video val_1, field 'annotations[0].segment': expected a number, got 'two'"),
    ("annotation at 5000 s in a 12.8 s video", damage("gt.json", replace_text('["5.0", "8.0"]', '["5.0", "5000"]')),
     "gt.json, video tst_2, field 'annotations': an instance ends at 5000 s, but the video lasts 12.8 s"),
    ("fps not positive", damage("fps.json", lambda p: p.write_text('{"val_1": -30}')),
     "fps.json, video val_1, field 'fps': -30 is not a positive number"),
    ("fps not JSON", damage("fps.json", lambda p: p.write_text("val_1: 30")), "fps.json: not valid JSON"),
    ("duration missing", damage("durations.json", lambda p: p.write_text('{"val_1": 32.0}')),
     "durations.json, video val_2, field 'duration': missing (3 video(s)"),
    ("ambiguous line", damage("ambiguous.txt", lambda p: p.write_text("tst_1 1.0\n")),
     "ambiguous.txt, line 1: expected 'video start end', got 2 fields"),
    ("ambiguous reversed", damage("ambiguous.txt", lambda p: p.write_text("tst_1 5.0 1.0\n")),
     "ambiguous.txt, line 1: start 5.0 > end 1.0"),
    ("feature length vs duration", damage("durations.json", replace_text('"tst_1": 24.0', '"tst_1": 40.0')),
     "rgb/tst_1.npy, video tst_1, field 'shape': 37 snippets cover 23.68 s, the video lasts 40.00 s"),
]


@pytest.mark.parametrize("edit, expected", [c[1:] for c in FETCH_CASES], ids=[c[0] for c in FETCH_CASES])
def test_bad_files_at_fetch_are_one_line_and_write_nothing(tmp_path: Path, cache: Path, edit, expected):
    entry = make_entry(tmp_path)
    edit(tmp_path / "src")
    with pytest.raises(DataError) as info:
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    one_line(str(info.value), expected)
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == [] and cache_files(cache) == []


def test_ambiguous_segments_of_unknown_videos_are_counted_and_named(tmp_path: Path, cache: Path, caplog):
    entry = make_entry(tmp_path)
    (tmp_path / "src" / "ambiguous.txt").write_text("tst_1 1.0 2.0\nval_bad 1.0 2.0\ntypo_1 3.0 4.0\ntypo_1 5.0 6.0\n")
    with caplog.at_level(logging.INFO):
        fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("left out 2 segment(s) of 1 video(s) that are not in the dataset: typo_1" in w for w in warnings)
    assert not any("val_bad" in w for w in warnings)  # an excluded video is expected there
    assert (tmp_path / "ds" / "ambiguous.txt").read_text() == "tst_1  1.0 2.0\n"


def test_late_annotations_within_the_factor_still_raise_the_duration(tmp_path: Path, cache: Path):
    entry = make_entry(tmp_path)  # as four THUMOS14 videos do (the worst at 1.86x)
    gt = tmp_path / "src" / "gt.json"
    gt.write_text(gt.read_text().replace('["5.0", "8.0"]', '["5.0", "20.0"]'))  # tst_2 lasts 12.8 s
    info = fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    assert info.durations["tst_2"] == 20.0


# ----------------------------------------------------------------------------- features read in place


def fetched_in_place(tmp_path: Path) -> tuple[Dataset, Path]:
    entry = make_entry(tmp_path)
    fetch_dataset("toy", entry, tmp_path / "ds", progress=False)
    return Dataset(tmp_path / "ds"), tmp_path / "src" / "pack" / "features" / "test" / "flow" / "tst_1.npy"


def same_size_same_mtime(path: Path) -> None:
    stamp = path.stat()
    array = np.load(path)
    array[3, 1] = -array[3, 1] + 1.0
    np.save(path, array)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # restored with its old timestamp


@pytest.mark.parametrize("change, expected", [
    (same_size_same_mtime, "this feature file changed content (same size; its sha256 differs from the fetched"),
    (lambda p: np.save(p, np.zeros((40, 2), np.float32)), "this feature file changed size"),
    (Path.unlink, "this feature file vanished since the fetch stage validated it"),
], ids=["content, same size and mtime", "size", "vanished"])
def test_later_stages_refuse_a_feature_file_that_changed(tmp_path: Path, cache: Path, change, expected):
    dataset, path = fetched_in_place(tmp_path)
    before = dataset.read_features("test", "tst_1")
    change(path)
    with pytest.raises(DataError) as info:
        dataset.read_features("test", "tst_1")
    one_line(str(info.value), "flow/tst_1.npy, video tst_1: " + expected, "run `dvc repro -f fetch`")
    assert before.shape == (37, 5)


def test_a_touched_feature_file_with_the_same_content_is_still_accepted(tmp_path: Path, cache: Path):
    dataset, path = fetched_in_place(tmp_path)
    before = dataset.read_features("test", "tst_1")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert np.array_equal(dataset.read_features("test", "tst_1"), before)


# ----------------------------------------------------------------------------- proposals at import


def results_json(rows: dict[str, list]) -> str:
    return json.dumps({"results": rows})


def built_video(built: Path, split: str) -> str:
    return json.loads((built / "data" / "dataset" / "dataset.json").read_text())["videos"][split][0]


PROPOSAL_CASES = [
    ("score as a string", lambda v: results_json({v: [{"label": "Archery", "score": "0.5", "segment": [1, 2]}]}), {},
     ", field '[0].score': expected a JSON number, got the string '0.5' (write scores unquoted)"),
    ("score NaN", lambda v: '{"results": {"%s": [{"label": "Archery", "score": NaN, "segment": [1, 2]}]}}' % v, {},
     ", field '[0].score': not a finite number (nan)"),
    ("unknown label", lambda v: results_json({v: [{"label": "Swim", "score": 0.5, "segment": [1, 2]}]}), {},
     ", field 'label': unknown class 'Swim' (1 proposal(s)"),
    ("segment reversed", lambda v: results_json({v: [{"label": "Archery", "score": 0.5, "segment": [3, 2]}]}), {},
     ", field '[0].segment': end 2.0 is before start 3.0"),
    ("not JSON", lambda v: "{results", {}, "test.json: not valid JSON"),
    ("no results object", lambda v: "[]", {}, "test.json: expected a JSON object with a 'results' object"),
    ("more than proposals.max_per_video", lambda v: results_json(
        {v: [{"label": "Archery", "score": 0.5, "segment": [1, 2]}] * 6}), {"proposals.max_per_video": 5},
     ": 6 proposals, more than proposals.max_per_video = 5 (1 video(s) over the limit)"),
    ("outside the video, refused", lambda v: results_json(
        {v: [{"label": "Archery", "score": 0.5, "segment": [1, 900]}]}), {"proposals.invalid": "refuse"},
     "lies outside the video"),
]


@pytest.mark.parametrize("content, edits, expected", [c[1:] for c in PROPOSAL_CASES],
                         ids=[c[0] for c in PROPOSAL_CASES])
def test_bad_proposals_are_one_line_and_write_nothing(built: Path, tmp_path: Path, content, edits, expected):
    repo = copy_built(built, tmp_path)
    set_params(repo, edits)
    locator = repo / "data" / "locator"
    (locator / "train.json").write_text(results_json(  # a valid training split; the test split is the bad one
        {built_video(built, "train"): [{"label": "Archery", "score": 0.5, "segment": [1, 2]}]}))
    (locator / "test.json").write_text(content(built_video(built, "test")))
    before = snapshot(repo)
    code, errors = run_stage("proposals", repo)
    assert code == 2 and len(errors) == 1, errors
    one_line(errors[0], expected)
    assert {k: v for k, v in snapshot(repo).items() if not k.startswith("data/locator")} == \
        {k: v for k, v in before.items() if not k.startswith("data/locator")}


# ----------------------------------------------------------------------------- downloads


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>...</body></html>"
GT = json.dumps({"database": {}}).encode()
DOWNLOAD_CASES = [
    # (what the server sends, what the consumer expects, what the line says)
    (HTML, "json", "the server sent an HTML page, not a JSON file (a Google Drive quota or virus-scan page"),
    (b"\n  <html><body>captive portal</body></html>", "csv", "the server sent an HTML page, not a CSV text file"),
    (HTML, "archive", "the server sent an HTML page, not a .tar, .tar.gz or .zip archive"),
    (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>", "json", "the server sent an XML document"),
    (b'{"database": {"v": ', "json", "not valid JSON (Expecting value"),
    (b"video_1,12.5\n", "json", "not JSON (it starts with b'video_1,12.5\\n')"),
    (b"hello", "npy", "not a .npy array (it starts with b'hello'"),
    (bytes(range(256)), "text", "binary data, not a text file"),
    (b"", "json", "the file is empty, not a JSON file"),
    (b"plain text", "archive", "not a .tar, .tar.gz or .zip archive"),
    (b"\xff\xfe\x00s\x00o\x00m\x00e", "csv", "binary data, not a CSV text file"),
]


@pytest.mark.parametrize("body, expect, expected", DOWNLOAD_CASES,
                         ids=[f"{c[1]}-{c[0][:12]!r}" for c in DOWNLOAD_CASES])
def test_a_download_that_is_not_what_it_must_be_never_enters_the_cache(server, cache: Path, body, expect, expected):
    url = server.add("/gt.json", body)
    source = parse_source(url, "datasets.thumos14.sources.gt")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False, expect=expect)
    one_line(str(info.value), f"datasets.thumos14.sources.gt (url {url}): " + expected, "Nothing was cached",
             "set datasets.thumos14.sources.gt to its local path")
    assert cache_files(cache) == []


def test_fixing_the_server_fixes_the_next_run(server, cache: Path):
    url = server.add("/gt.json", HTML)
    source = parse_source(url, "datasets.thumos14.sources.gt")
    with pytest.raises(SourceError):
        materialize(source, progress=False, expect="json")
    server.files["/gt.json"] = GT
    assert materialize(source, progress=False, expect="json").read_bytes() == GT


def test_a_poisoned_cache_of_an_older_version_is_healed(server, cache: Path):
    url = server.add("/gt.json", GT)
    source = parse_source(url, "k")
    path = materialize(source, progress=False, expect="json")
    path.write_bytes(HTML)  # what an unchecked download left in the cache
    assert materialize(source, progress=False, expect="json").read_bytes() == GT
    assert len(server.requests) == 2


def test_a_google_drive_quota_page_is_refused(monkeypatch, cache: Path):
    import gdown

    monkeypatch.setattr(gdown, "download", lambda **kw: Path(kw["output"]).write_bytes(HTML) and kw["output"])
    source = parse_source({"gdrive": "FILEID"}, "locators.lacp.sources.test")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False, expect="json")
    one_line(str(info.value), "locators.lacp.sources.test (gdrive FILEID): the server sent an HTML page",
             "wait for Google Drive's download quota to reset")
    assert cache_files(cache) == []


def test_a_stalled_transfer_is_resumed(server, cache: Path, monkeypatch):
    monkeypatch.setattr(sources, "TIMEOUT_S", 0.3)
    payload = bytes(range(256)) * 40
    url = server.add("/f.bin", payload, ["stall"])
    assert materialize(parse_source(url, "k"), progress=False).read_bytes() == payload
    assert server.ranges("/f.bin") == [None, f"bytes={len(payload) // 2}-"]
    assert [Path(p).name for p in cache_files(cache)] == ["f.bin"]


def test_a_missing_file_names_the_url_and_the_param(server, cache: Path):
    with pytest.raises(SourceError) as info:
        materialize(parse_source(server.url("/nope.json"), "locators.lacp.sources.train"), progress=False)
    one_line(str(info.value), f"locators.lacp.sources.train (url {server.url('/nope.json')}): HTTP 404")
    assert cache_files(cache) == []


def test_a_checksum_mismatch_names_both_and_keeps_nothing(server, cache: Path):
    url = server.add("/gt.json", GT)
    with pytest.raises(SourceError) as info:
        materialize(parse_source({"url": url, "sha256": "f" * 64}, "datasets.thumos14.sources.gt"), progress=False)
    one_line(str(info.value), "sha256 is", "expected " + "f" * 64, "set datasets.thumos14.sources.gt.sha256")
    assert cache_files(cache) == []


class FullDisk:
    """`open` for one module: files opened for writing raise ENOSPC after `room` bytes."""

    def __init__(self, room: int):
        self.room = room

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if not any(c in mode for c in "wax"):
            return handle
        disk, write = self, handle.write

        def limited(data):
            if len(data) > disk.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            disk.room -= len(data)
            return write(data)

        handle.write = limited
        return handle


def test_a_full_disk_while_downloading_says_so(server, cache: Path, monkeypatch):
    url = server.add("/big.bin", bytes(3 << 20))
    monkeypatch.setattr(sources, "open", FullDisk(1 << 20), raising=False)
    with pytest.raises(SourceError) as info:
        materialize(parse_source(url, "datasets.thumos14.sources.features"), progress=False)
    one_line(str(info.value), f"datasets.thumos14.sources.features (url {url}): the disk holding the download cache",
             "set TSPNET_CACHE to a larger disk", "bytes received so far are kept")
    received = int(re.search(r"is full after (\d+) bytes", str(info.value)).group(1))
    assert 0 < received <= 1 << 20


# ----------------------------------------------------------------------------- archives


def tar_gz(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    return tar_bytes(files, gzip=True, extra=extra)


def zipped(files: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    return zip_bytes(files, modes, deflate=True)  # deflated: a zip bomb's ratio


ZEROS = bytes(4 << 20)  # 4 MiB that deflate to a few kB
ARCHIVE_CASES = [
    ("zip bomb", zipped({"f/train/a.npy": ZEROS}), UnpackLimits(), "unpacks to more than", "archives.max_ratio = 100"),
    ("tar.gz bomb", tar_gz({"f/train/a.npy": ZEROS}), UnpackLimits(), "unpacks to more than", "archives.max_ratio"),
    ("over the total", tar_gz({"f/a.npy": os.urandom(4096)}), UnpackLimits(max_bytes=1000),
     "unpacks to more than 1000 bytes", "archives.max_unpacked_gib"),
    ("zip over the total", zipped({"f/a.npy": os.urandom(4096)}), UnpackLimits(max_bytes=1000),
     "unpacks to more than 1000 bytes", "archives.max_unpacked_gib"),
    ("../ member", tar_gz({"ok.npy": b"1", "../evil.npy": b"2"}), UnpackLimits(), "'../evil.npy'",
     "would land outside the target"),
    ("absolute member", tar_gz({"/tmp/evil.npy": b"2"}), UnpackLimits(), "'/tmp/evil.npy'", "outside the target"),
    ("symbolic link", tar_gz({}, [member("l.npy", tarfile.SYMTYPE, "/etc/passwd")]), UnpackLimits(), "is a link", ""),
    ("hard link", tar_gz({"a": b"1"}, [member("h.npy", tarfile.LNKTYPE, "a")]), UnpackLimits(), "is a link", ""),
    ("device", tar_gz({}, [member("dev", tarfile.CHRTYPE)]), UnpackLimits(), "is a device, pipe or other", ""),
    ("zip ../ member", zipped({"../evil.npy": b"2"}), UnpackLimits(), "would land outside the target", ""),
    ("zip symbolic link", zipped({"l.npy": b"/etc/passwd"}, {"l.npy": stat.S_IFLNK | 0o777}), UnpackLimits(),
     "is a symbolic link", ""),
    ("truncated tar.gz", tar_gz({"f/a.npy": os.urandom(50000)})[:20000], UnpackLimits(),
     "is not a readable archive", "deleted and fetched again"),
]


@pytest.mark.parametrize("archive, limits, expected, also", [c[1:] for c in ARCHIVE_CASES],
                         ids=[c[0] for c in ARCHIVE_CASES])
def test_a_refused_archive_leaves_nothing_behind(server, cache: Path, tmp_path: Path, archive, limits, expected, also):
    url = server.add("/features.tar.gz", archive)
    source = parse_source(url, "datasets.thumos14.sources.features")
    with pytest.raises(SourceError) as info:
        materialize(source, progress=False, expect="archive", limits=limits)
    one_line(str(info.value), "datasets.thumos14.sources.features", expected, also,
             "The download was deleted from the cache")
    assert cache_files(cache) == []  # neither the download nor anything unpacked from it
    assert not (tmp_path / "evil.npy").exists() and not Path("/tmp/evil.npy").exists()


def test_a_local_archive_that_is_refused_is_not_deleted(tmp_path: Path, cache: Path):
    path = tmp_path / "bomb.zip"
    path.write_bytes(zipped({"a.npy": ZEROS}))
    with pytest.raises(SourceError, match="archives.max_ratio"):
        materialize(parse_source(str(path), "k"), progress=False)
    assert path.exists() and cache_files(cache) == []


def test_a_full_disk_while_unpacking_says_so(tmp_path: Path, cache: Path, monkeypatch):
    path = tmp_path / "features.tar.gz"
    path.write_bytes(tar_gz({"f/a.npy": os.urandom(3 << 20)}))
    monkeypatch.setattr(archives, "open", FullDisk(1 << 20), raising=False)
    with pytest.raises(SourceError) as info:
        materialize(parse_source(str(path), "datasets.x.sources.features"), progress=False)
    one_line(str(info.value), "datasets.x.sources.features: the disk is full while unpacking",
             "all removed", "set TSPNET_CACHE to a larger disk")
    assert cache_files(cache) == []


def test_an_archive_within_the_limits_unpacks(tmp_path: Path, cache: Path):
    path = tmp_path / "features.tar.gz"
    data = os.urandom(5000)
    path.write_bytes(tar_gz({"f/train/a.npy": data}))
    out = materialize(parse_source(str(path), "k"), progress=False, limits=UnpackLimits(max_bytes=5000, max_ratio=2))
    assert (out / "f" / "train" / "a.npy").read_bytes() == data


# ----------------------------------------------------------------------------- killed runs


KILLED_WRITER = """
import sys, time
from tspnet.files import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(bytes(1 << 20))
    print("ready", flush=True)
    time.sleep(60)
"""


def killed_writer(target: Path) -> None:
    """A writer of `target` killed with SIGKILL half-way, as kill -9 of a stage leaves it."""
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_the_temporary_of_a_killed_stage_is_removed_by_the_next_run(tmp_path: Path):
    killed_writer(tmp_path / "data" / "dataset")
    assert len(leftovers(tmp_path)) == 1  # data/.dataset.XXXXXXXX.tmp, as the issue found it
    with atomic_dir(tmp_path / "data" / "dataset") as tmp:
        (tmp / "complete.txt").write_text("ok")
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "data") == ["dataset"]


def test_a_killed_unpack_is_removed_by_the_next_unpack(tmp_path: Path, cache: Path):
    killed_writer(cache / "unpacked" / ("0" * 24))  # an unpack of another archive, killed
    path = tmp_path / "features.tar.gz"
    path.write_bytes(tar_gz({"f/a.npy": b"1"}))
    materialize(parse_source(str(path), "k"), progress=False)
    assert leftovers(cache) == []


def test_a_live_temporary_is_never_taken_for_a_stale_one(tmp_path: Path):
    target = tmp_path / "out"
    with atomic_dir(target) as outer:
        (outer / "mine.txt").write_text("x")
        with atomic_dir(tmp_path / "other"):
            pass
        with atomic_dir(target) as inner:  # another writer of the same output, while the first still runs
            (inner / "theirs.txt").write_text("y")
        assert outer.exists()
    assert os.listdir(target) == ["mine.txt"]


PAUSING_STAGE = """
import importlib, runpy, sys, time
module, name, script = sys.argv[1:4]
owner = importlib.import_module(module)
original = getattr(owner, name)

def paused(*args, **kwargs):  # the stage's own call, then a pause in which the test kills it
    result = original(*args, **kwargs)
    print("PAUSED", file=sys.stderr, flush=True)
    time.sleep(120)
    return result

setattr(owner, name, paused)
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def kill_9_inside(repo: Path, stage: str, function: str) -> None:
    """Run a stage and SIGKILL it right after `function` (module.name) returned: half-way through its writes."""
    module, name = function.rsplit(".", 1)
    script = str(REPO / "stages" / f"{stage}.py")
    process = subprocess.Popen([sys.executable, "-c", PAUSING_STAGE, module, name, script], cwd=repo,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while b"PAUSED" not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen.decode(errors="replace")[-3000:]
        seen += chunk
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("stage, function, outputs", [
    # train: killed once model.pt is written into the temporary directory, before the rename
    ("train", "tspnet.pipeline.save_model", ["data/model", "metrics/train.json", "plots/train_losses.png"]),
    # infer: killed once tspnet.json is written, before proposal_scores.npz and the rename
    ("infer", "tspnet.activitynet.write_results", ["data/detections", "metrics/infer.json"]),
])
def test_kill_9_then_resume_gives_the_same_bytes(built: Path, tmp_path: Path, stage, function, outputs):
    repo = copy_built(built, tmp_path)
    for out in outputs:
        shutil.rmtree(repo / out) if (repo / out).is_dir() else (repo / out).unlink()
    kill_9_inside(repo, stage, function)
    assert not any((repo / out).exists() for out in outputs)  # nothing half-written under the final names
    assert leftovers(repo)  # the killed writer's temporary, as kill -9 leaves it
    process = stage_subprocess(stage, repo)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()[-2000:]
    for out in outputs:
        files = sorted(p for p in (built / out).rglob("*") if p.is_file()) if (built / out).is_dir() else [built / out]
        for path in files:
            rel = path.relative_to(built)
            if rel.suffix != ".png":  # matplotlib stamps nothing, but PNG bytes are not this project's promise
                assert (repo / rel).read_bytes() == path.read_bytes(), rel
    assert leftovers(repo) == []  # the next run removed what the killed one left


# ----------------------------------------------------------------------------- the model file


def evil_pickle(path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))


MODEL_CASES = [
    ("pickle payload", evil_pickle, "model.pt: holds Python objects besides tensors, which this project never"),
    ("arbitrary object", lambda p: torch.save({"x": object()}, p), "model.pt: holds Python objects besides tensors"),
    ("empty", lambda p: p.write_bytes(b""), "model.pt: the file is empty (an interrupted copy?)"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:200]), "model.pt: truncated or damaged checkpoint"),
    ("text", lambda p: p.write_text("weights"), "model.pt: not a PyTorch checkpoint (it starts with b'weig')"),
    ("not this project's", lambda p: torch.save({"weights": torch.zeros(2)}, p),
     "model.pt: not a TSPNet checkpoint of this project"),
    ("another shape", lambda p: torch.save({"state_dict": {}, "feature_dim": 16, "num_classes": 5}, p),
     "model.pt: not a TSPNet checkpoint of this project"),
]


@pytest.mark.parametrize("damage_model, expected", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_a_bad_model_file_is_one_line_and_never_runs(built: Path, tmp_path: Path, damage_model, expected):
    repo = copy_built(built, tmp_path)
    damage_model(repo / "data" / "model" / "model.pt")
    before = snapshot(repo)
    code, errors = run_stage("infer", repo)
    assert code == 2 and len(errors) == 1, errors
    one_line(errors[0], expected, "rerun `dvc repro train`")
    assert snapshot(repo) == before and not (repo / "pwned").exists() and not Path("pwned").exists()


# ----------------------------------------------------------------------------- a full disk in a stage


@pytest.mark.parametrize("stage, target", [("infer", "numpy.savez"), ("evaluate_base", "json.dump")])
def test_a_full_disk_in_a_stage_is_one_line(built: Path, tmp_path: Path, monkeypatch, stage, target):
    repo = copy_built(built, tmp_path)
    module, name = target.split(".")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys.modules[module], name, full)
    before = snapshot(repo)
    code, errors = run_stage(stage, repo)
    assert code == 2 and len(errors) == 1, errors
    one_line(errors[0], "the disk is full (No space left on device): nothing half-written was kept; free some space")
    assert snapshot(repo) == before


# ----------------------------------------------------------------------------- evaluate, modes


def test_evaluate_names_the_labels_it_ignores(tmp_path: Path, caplog):
    from tspnet.cli import main

    gt = {"database": {"v1": {"subset": "test", "annotations": [{"segment": [1, 2], "label": "Run"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rows = [{"label": label, "score": 0.5, "segment": [1, 2]} for label in ("Run", "Swim", "Swim", "Fly")]
    (tmp_path / "pred.json").write_text(json.dumps({"results": {"v1": rows}}))
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--ground-truth", str(tmp_path / "gt.json"), "--predictions",
                     str(tmp_path / "pred.json")]) == 0
    assert "ignoring 3 predictions whose label is not a ground-truth class: 'Swim' (2), 'Fly' (1) (the ground " \
           "truth has Run)" in caplog.text


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path: Path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "detections") as tmp:
            write_json(tmp / "tspnet.json", {"b": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "detections").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "detections" / "tspnet.json").stat().st_mode) == file_mode


def test_a_gzip_that_is_no_tar_is_refused(tmp_path: Path, cache: Path):
    path = tmp_path / "features.gz"
    path.write_bytes(gzip.compress(b"just text, no tar"))
    with pytest.raises(SourceError) as info:
        materialize(parse_source(str(path), "datasets.x.sources.features"), progress=False)
    one_line(str(info.value), "datasets.x.sources.features:", "is not a readable archive")
    assert path.exists() and cache_files(cache) == []
