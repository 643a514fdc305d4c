"""Run identity and "not computed" records; the stages after a dataset without features write no number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_fetch import make_entry
from tspnet import pipeline
from tspnet.activitynet import write_results
from tspnet.fetch import fetch_dataset
from tspnet.files import DataError
from tspnet.headline import format_headline, headline_record, read_run
from tspnet.records import (MixedRuns, mark_not_computed, merge_records, no_features, not_computed,
                            not_computed_reason, run_identity, status_of)

PARAMS = {"dataset": "toy", "proposals": {"locator": "pmil"}, "locate": {"method": "builtin"},
          "base": {"seed": 3, "threads": 1}}
IDENTITY = {"run.dataset": "toy", "run.locator": "pmil", "run.seed": 3}


def test_identity_and_not_computed_records():
    assert run_identity(PARAMS) == IDENTITY
    # The locate stage's own proposals: the identity names the method that made them.
    lacp = {**PARAMS, "proposals": {"locator": "builtin"}, "locate": {"method": "lacp"}}
    assert run_identity(lacp) == {**IDENTITY, "run.locator": "lacp"}
    assert not_computed("tspnet", no_features("thumos14")) == {
        "tspnet.status": "not computed: no features (datasets.thumos14.sources.features)"}
    assert not_computed("train", "loaded from train.checkpoint", verdict="not trained here") == {
        "train.status": "not trained here: loaded from train.checkpoint"}
    assert status_of({"tspnet.status": "not computed: x"}, "tspnet") == "not computed: x"
    assert status_of({"tspnet.map@0.5": 1.0}, "tspnet") is None
    with pytest.raises(KeyError, match="base.seed"):
        run_identity({"dataset": "toy", "proposals": {"locator": "x"}, "locate": {"method": "lacp"}, "base": {}})


def test_merging_refuses_files_of_different_runs():
    merged = merge_records({"a.json": {**IDENTITY, "base.x": 1.0}, "b.json": {**IDENTITY, "tspnet.x": 2.0},
                            "old.json": {"labels.points": 5}})  # no identity: read as it is
    assert merged == {**IDENTITY, "base.x": 1.0, "tspnet.x": 2.0, "labels.points": 5}
    with pytest.raises(MixedRuns, match="a.json says run.seed 3 but b.json says 4"):
        merge_records({"a.json": IDENTITY, "b.json": {**IDENTITY, "run.seed": 4}})


def test_directory_markers(tmp_path: Path):
    assert not_computed_reason(tmp_path) is None
    mark_not_computed(tmp_path, "no features (datasets.x.sources.features)")
    assert not_computed_reason(tmp_path) == "no features (datasets.x.sources.features)"


@pytest.fixture
def no_features_run(tmp_path: Path, cache: Path) -> Path:
    """train, infer and evaluate on a dataset fetched without features, with base detections of its own."""
    dataset = tmp_path / "dataset"
    entry = {**make_entry(tmp_path, features=False), "tiou_thresholds": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}
    fetch_dataset("toy", entry, dataset, progress=False)
    base = tmp_path / "base_detections"
    base.mkdir()
    write_results(base / "base.json", pd.DataFrame({"video": ["tst_1", "tst_2"], "label": ["Run", "Jump"],
                                                    "start": [3.0, 5.5], "end": [9.0, 8.0], "score": [0.9, 0.5]}))
    metrics, plots = tmp_path / "metrics", tmp_path / "plots"
    pipeline.run_train({"seed": 3}, {}, {}, dataset, tmp_path / "proposals", tmp_path / "labels",
                       tmp_path / "model", metrics / "train.json", plots / "train", plots, IDENTITY)
    pipeline.run_infer({"seed": 3}, {}, {}, dataset, tmp_path / "proposals", tmp_path / "model",
                       tmp_path / "detections", metrics / "infer.json", IDENTITY)
    pipeline.run_evaluate(dataset, tmp_path / "detections", base, metrics / "tspnet.json", plots,
                          metrics / "headline.json", IDENTITY)
    return tmp_path


REASON = "no features (datasets.toy.sources.features)"


def test_without_features_no_tspnet_number_is_written(no_features_run: Path):
    metrics = {p.name: json.loads(p.read_text()) for p in (no_features_run / "metrics").glob("*.json")}
    assert metrics["train.json"] == {**IDENTITY, "train.status": f"not computed: {REASON}"}
    assert metrics["infer.json"] == {**IDENTITY, "infer.status": f"not computed: {REASON}"}
    assert metrics["tspnet.json"] == {**IDENTITY, **{f"{p}.status": f"not computed: {REASON}"
                                                     for p in ("tspnet", "gain", "alignment")}}
    headline = metrics["headline.json"]
    # Each test instance has one detection of its class with tIoU >= 0.83: the base locator's mAP is 100.
    assert headline == {**IDENTITY, "base.avg_0.1_0.7": 100.0,
                        "tspnet.status": f"not computed: {REASON}", "gain.status": f"not computed: {REASON}"}
    assert not any(isinstance(v, (int, float)) for k, v in headline.items() if k.startswith(("tspnet", "gain")))


def test_without_features_every_output_exists_and_says_why(no_features_run: Path):
    with pytest.raises(DataError, match=f"holds no model.*{REASON.replace('(', '.').replace(')', '.')}"):
        pipeline.load_model(no_features_run / "model" / "model.pt")
    assert pd.read_csv(no_features_run / "model" / "points.csv").empty
    assert not_computed_reason(no_features_run / "detections") == REASON
    for stem in ("map_vs_tiou", "per_class_ap", "alignment", "center_labels"):
        table = pd.read_csv(no_features_run / "plots" / f"{stem}.csv")
        assert table.empty and len(table.columns) == 3, stem
    for stem in ("map_vs_tiou", "per_class_ap", "alignment", "center_labels", "train_losses"):
        assert (no_features_run / "plots" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG", stem
    tsv = no_features_run / "plots" / "train" / "plots" / "metrics" / "train" / "loss.tsv"
    assert tsv.read_text() == "step\tloss\n"


def test_the_headline_says_what_was_not_computed(no_features_run: Path):
    run = read_run(no_features_run / "metrics")
    text = format_headline(run)
    assert "headline of the run (dataset toy, locator pmil, seed 3)" in text
    assert f"TSPNet          not computed: {REASON}" in text and "base locator" in text
    assert headline_record(run) == json.loads((no_features_run / "metrics" / "headline.json").read_text())


def test_the_headline_table_by_hand():
    run = {**IDENTITY, "base.map@0.5": 50.0, "base.map@0.1": 70.0, "base.avg_0.1_0.5": 60.0,
           "tspnet.map@0.1": 75.0, "tspnet.map@0.5": 52.5, "tspnet.avg_0.1_0.5": 63.75,
           "gain.map@0.1": 5.0, "gain.map@0.5": 2.5, "gain.avg_0.1_0.5": 3.75,
           "alignment.spearman_base": 0.3551, "alignment.spearman_tspnet": 0.6019}
    assert format_headline(run).splitlines() == [
        "headline of the run (dataset toy, locator pmil, seed 3), test split",
        "mAP (%)           @0.1    @0.5 0.1:0.5",
        "base locator     70.00   50.00   60.00",
        "TSPNet           75.00   52.50   63.75",
        "gain             +5.00   +2.50   +3.75",
        "Spearman (confidence vs best tIoU of each test proposal): base 0.355, TSPNet 0.602",
    ]
    assert headline_record(run) == IDENTITY  # no 0.1:0.7 average here
    assert np.isclose(run["gain.avg_0.1_0.5"], run["tspnet.avg_0.1_0.5"] - run["base.avg_0.1_0.5"])


def test_lacps_own_figure_joins_the_headline_only_when_lacp_ran():
    run = {**IDENTITY, "run.locator": "lacp", "base.map@0.5": 50.0, "base.avg_0.1_0.7": 40.0,
           "lacp.map@0.5": 45.0, "lacp.avg_0.1_0.7": 38.0, "tspnet.map@0.5": 52.0, "tspnet.avg_0.1_0.7": 41.0,
           "gain.map@0.5": 2.0, "gain.avg_0.1_0.7": 1.0}
    lines = format_headline(run).splitlines()
    assert [line.split("  ")[0] for line in lines[2:]] == ["LACP, its NMS", "base locator", "TSPNet", "gain"]
    assert lines[2].split()[-2:] == ["45.00", "38.00"]
    assert headline_record(run)["lacp.avg_0.1_0.7"] == 38.0
    builtin = {key: value for key, value in run.items() if not key.startswith("lacp.")}
    assert "lacp.avg_0.1_0.7" not in headline_record({**builtin, **not_computed("lacp", "locate.method is builtin")})
    assert not format_headline(builtin).splitlines()[2].startswith("LACP")


def test_evaluate_lacp_scores_lacps_detections_or_says_why_it_did_not_run(no_features_run: Path):
    dataset, locator = no_features_run / "dataset", no_features_run / "locator"
    locator.mkdir()
    (locator / pipeline.LACP_STATS).write_text(json.dumps(not_computed("lacp", "locate.method is builtin")))
    pipeline.run_evaluate_lacp(dataset, locator, no_features_run / "lacp.json", IDENTITY)
    assert json.loads((no_features_run / "lacp.json").read_text()) == {
        **IDENTITY, "lacp.status": "not computed: locate.method is builtin"}

    (locator / pipeline.LACP_STATS).write_text(json.dumps({"lacp.test_detections": 2}))
    (locator / "lacp_detections.json").write_bytes((no_features_run / "base_detections" / "base.json").read_bytes())
    pipeline.run_evaluate_lacp(dataset, locator, no_features_run / "lacp.json", IDENTITY)
    metrics = json.loads((no_features_run / "lacp.json").read_text())
    # The same two detections as the base fixture's: each test instance found, mAP 100 at every tIoU.
    assert metrics == {**IDENTITY, **{f"lacp.map@{t}": 100.0 for t in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6",
                                                                        "0.7")},
                       "lacp.avg_0.1_0.5": 100.0, "lacp.avg_0.3_0.7": 100.0, "lacp.avg_0.1_0.7": 100.0,
                       "lacp.test_detections": 2}
