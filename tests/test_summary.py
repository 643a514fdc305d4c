"""Mean ± std of metrics over experiments."""

import math

import pytest

from tspnet.summary import format_summary, select_runs, summarize

ROWS = [
    {"Experiment": None, "rev": "workspace", "typ": "baseline", "tspnet.avg_0.1_0.7": 50.0},
    {"Experiment": None, "rev": "abc1234", "typ": "baseline", "tspnet.avg_0.1_0.7": 50.0},
    {"Experiment": "seed-0", "rev": "1111111", "typ": "branch_commit", "tspnet.avg_0.1_0.7": 60.0,
     "gain.avg_0.1_0.7": 5.0, "train.loss": 0.5, "base.seed": 0},
    {"Experiment": "seed-1", "rev": "2222222", "typ": "branch_commit", "tspnet.avg_0.1_0.7": 62.0,
     "gain.avg_0.1_0.7": 6.0, "train.loss": 0.4, "base.seed": 1},
    {"Experiment": "seed-2", "rev": "3333333", "typ": "branch_base", "tspnet.avg_0.1_0.7": 64.0,
     "gain.avg_0.1_0.7": 7.0, "train.loss": 0.3, "base.seed": 2},
]


def test_without_names_all_experiments_but_not_baselines():
    assert [r["Experiment"] for r in select_runs(ROWS, [])] == ["seed-0", "seed-1", "seed-2"]


def test_by_name_or_revision_prefix():
    assert [r["Experiment"] for r in select_runs(ROWS, ["seed-2", "111"])] == ["seed-2", "seed-0"]
    with pytest.raises(KeyError):
        select_runs(ROWS, ["nope"])


def test_mean_and_sample_std_by_hand():
    table = summarize(select_runs(ROWS, []), ["tspnet.avg_*", "gain.*"]).set_index("metric")
    # 60, 62, 64: mean 62, sample variance (4 + 0 + 4) / 2 = 4, std 2.
    assert table.loc["tspnet.avg_0.1_0.7", "mean"] == 62.0
    assert table.loc["tspnet.avg_0.1_0.7", "std"] == 2.0
    assert table.loc["gain.avg_0.1_0.7", "std"] == 1.0
    assert "train.loss" not in table.index and "base.seed" not in table.index
    text = format_summary(table.reset_index(), select_runs(ROWS, []))
    assert "3 run(s): seed-0, seed-1, seed-2" in text and "62.000" in text


def test_one_run_has_no_spread():
    table = summarize(select_runs(ROWS, ["seed-0"]), ["tspnet.*"])
    assert table["n"].tolist() == [1] and math.isnan(table["std"].iloc[0])
