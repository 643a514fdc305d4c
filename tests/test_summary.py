"""Summaries of a sweep: grouping by differing params, leaving out failed and not-computed runs, by hand."""

import math

import pytest

from tspnet.summary import Run, format_summary, runs_from_exp_show, summarize

NOT_COMPUTED = "not computed: no features (datasets.thumos14.sources.features)"


def params(seed=0, dataset="synthetic", locator="builtin", threads=1, lr=5e-5):
    return {"base": {"seed": seed, "threads": threads}, "dataset": dataset,
            "proposals": {"locator": locator}, "train": {"lr": lr, "roi_bins": 12},
            "datasets": {"synthetic": {"classes": ["A", "B"]}}}


def identity(p):
    return {"run.dataset": p["dataset"], "run.locator": p["proposals"]["locator"], "run.seed": p["base"]["seed"]}


def experiment(rev, name, p, state=None, error=None):
    return {"executor": None if state is None else {"state": state}, "name": name,
            "revs": [{"rev": rev, "name": name, "error": error,
                      "data": {"params": {"params.yaml": {"data": p}}, "metrics": {}}}]}


SEEDS = {"aaa1": (0, 60.0, 5.0), "aaa2": (1, 62.0, 6.0), "aaa3": (2, 64.0, 7.0)}
PMIL = params(dataset="thumos14", locator="pmil", threads=0)
FILES = {
    **{rev: {"metrics/base.json": {**identity(params(seed=s)), "base.avg_0.1_0.7": t - g},
             "metrics/tspnet.json": {**identity(params(seed=s)), "tspnet.avg_0.1_0.7": t, "gain.avg_0.1_0.7": g}}
       for rev, (s, t, g) in SEEDS.items()},
    "ppp1": {"metrics/base.json": {**identity(PMIL), "base.avg_0.1_0.7": 43.15},
             "metrics/tspnet.json": {**identity(PMIL), "tspnet.status": NOT_COMPUTED, "gain.status": NOT_COMPUTED}},
    # A file left from another run (seed 1) beside this run's (seed 3).
    "mmm1": {"metrics/base.json": {**identity(params(seed=3)), "base.avg_0.1_0.7": 50.0},
             "metrics/tspnet.json": {**identity(params(seed=1)), "tspnet.avg_0.1_0.7": 62.0}},
}
EXP_SHOW = [
    {"rev": "workspace", "name": None, "experiments": None},
    {"rev": "0123456789", "name": "main", "experiments": [
        *[experiment(rev, f"seed-{s}", params(seed=s)) for rev, (s, _, _) in SEEDS.items()],
        experiment("ppp1", "pmil", PMIL),
        experiment("fff1", "bad", params(dataset="thumos14", locator="lacp"), state="failed",
                   error={"msg": "Experiment run failed"}),
        experiment("qqq1", "later", params(seed=9), state="queued"),
        experiment("mmm1", "mixed", params(seed=3)),
    ]},
]


def runs(names=()):
    return runs_from_exp_show(EXP_SHOW, lambda rev: FILES[rev], names)


def test_failed_queued_and_mixed_runs_are_left_out_with_their_reason():
    summary = summarize(runs())
    left = {e["experiment"]: e["reason"] for e in summary["left_out"]}
    assert left["bad"] == "failed" and left["later"] == "queued"
    assert left["mixed"] == ("metrics files from different runs: metrics/base.json says run.seed 3 "
                            "but metrics/tspnet.json says 1")
    assert summary["experiments"] == 7
    text = format_summary(summary)
    assert "left out 3: 1 failed (bad); 1 queued (later); 1 metrics files from different runs" in text


def test_runs_are_grouped_by_every_param_that_differs_but_the_seed():
    summary = summarize(runs())
    # The sweep differs from pmil in dataset, locator and threads; the seed is no group key.
    assert summary["group_by"] == ["base.threads", "dataset", "proposals.locator"]
    sweep, pmil = summary["groups"]
    assert sweep["params"] == {"base.threads": 1, "dataset": "synthetic", "proposals.locator": "builtin"}
    assert sweep["experiments"] == ["seed-0", "seed-1", "seed-2"] and sweep["seeds"] == [0, 1, 2]
    # 60, 62, 64: mean 62, sample variance (4 + 0 + 4) / 2 = 4, std 2.
    assert sweep["metrics"]["tspnet.avg_0.1_0.7"] == {"n": 3, "mean": 62.0, "std": 2.0, "min": 60.0, "max": 64.0}
    # base = tspnet - gain: 55, 56, 57.
    assert sweep["metrics"]["base.avg_0.1_0.7"]["mean"] == 56.0 and sweep["metrics"]["gain.avg_0.1_0.7"]["std"] == 1.0
    assert pmil["experiments"] == ["pmil"]
    assert pmil["metrics"]["base.avg_0.1_0.7"] == {"n": 1, "mean": 43.15, "std": None, "min": 43.15, "max": 43.15}


def test_not_computed_metrics_leave_the_run_out_of_that_family_only():
    pmil = summarize(runs())["groups"][1]
    assert "tspnet.avg_0.1_0.7" not in pmil["metrics"] and "gain.avg_0.1_0.7" not in pmil["metrics"]
    assert pmil["not_computed"] == {"gain": [{"experiment": "pmil", "reason": NOT_COMPUTED}],
                                    "tspnet": [{"experiment": "pmil", "reason": NOT_COMPUTED}]}
    text = format_summary(summarize(runs()))
    assert f"tspnet.*: left out 1: 1 {NOT_COMPUTED} (pmil)" in text


def test_where_selects_and_group_by_overrides_the_automatic_keys():
    summary = summarize(runs(), conditions=["dataset=synthetic", "base.threads=1"])
    assert [g["experiments"] for g in summary["groups"]] == [["seed-0", "seed-1", "seed-2"]]
    assert summary["group_by"] == []  # nothing differs but the seed
    summary = summarize(runs(), group_by=["train.lr"])
    (group,) = summary["groups"]
    assert group["params"] == {"train.lr": 5e-5}
    assert group["also_differs"] == ["base.threads", "dataset", "proposals.locator"]
    assert "also differs within this group: base.threads, dataset, proposals.locator" in format_summary(summary)
    with pytest.raises(ValueError, match="no experiment has a param 'nope'"):
        summarize(runs(), conditions=["nope=1"])
    with pytest.raises(ValueError, match="expected PARAM=VALUE"):
        summarize(runs(), conditions=["dataset"])


def test_by_name_or_revision_prefix():
    assert [r.name for r in runs(["seed-2", "aaa1"])] == ["seed-2", "seed-0"]
    with pytest.raises(KeyError):
        runs(["nope"])


def test_one_run_has_no_spread():
    summary = summarize([Run("one", "r", {"base.seed": 0}, {"tspnet.avg_0.1_0.7": 60.0})])
    row = summary["groups"][0]["metrics"]["tspnet.avg_0.1_0.7"]
    assert row["n"] == 1 and row["std"] is None
    assert "tspnet.avg_0.1_0.7" in format_summary(summary) and math.isfinite(row["mean"])
