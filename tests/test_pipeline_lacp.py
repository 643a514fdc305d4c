"""LACP as the `locate` stage's method, end to end with DVC, in a scratch copy of the repository."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.dvc_repo import TINY, commit, copy_repo, dvc, set_params

pytestmark = pytest.mark.pipeline

# LACP small enough for seconds: a few steps, two searches.
TINY_LACP = {"locate.lacp.iterations": 10, "locate.lacp.search_every": 5, "locate.lacp.hidden": 32}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy with tiny params on the built-in locator, reproduced once and committed."""
    path = copy_repo(tmp_path_factory.mktemp("pipeline_lacp") / "repo")
    set_params(path, {**TINY, **TINY_LACP})
    dvc(["repro"], path)
    commit(path, "tiny run, built-in locator")
    return path


def test_builtin_run_records_that_lacp_was_not_computed(repo: Path):
    metrics = json.loads((repo / "metrics" / "lacp.json").read_text())
    assert metrics["lacp.status"] == "not computed: locate.method is builtin"
    assert [k for k in metrics if k.startswith("lacp.")] == ["lacp.status"]  # and no number
    assert "lacp.avg_0.1_0.7" not in json.loads((repo / "metrics" / "headline.json").read_text())


def test_lacp_params_do_not_rerun_a_builtin_run(repo: Path):
    set_params(repo, {"locate.lacp.iterations": 11})
    try:
        assert "locate" not in dvc(["status", "locate"], repo).stdout.replace("Data and pipelines are up to date", "")
    finally:
        set_params(repo, {"locate.lacp.iterations": TINY_LACP["locate.lacp.iterations"]})


def test_lacp_runs_the_whole_chain_and_its_metrics_show_beside_the_others(repo: Path, tmp_path: Path):
    result = dvc(["exp", "run", "-S", "locate.method=lacp", "-n", "lacp"], repo)
    for stage in ("locate", "evaluate_lacp", "proposals", "labels", "train", "infer", "evaluate_base", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout, stage
    diff = dvc(["metrics", "diff", "HEAD", "lacp"], repo).stdout  # the headline: LACP's average joins it
    for key in ("lacp.avg_0.1_0.7", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7"):
        assert key in diff, key
    diff = dvc(["metrics", "diff", "HEAD", "lacp", "--targets", "metrics/lacp.json"], repo).stdout
    assert "lacp.map@0.5" in diff and "lacp.test_video_accuracy" in diff
    metrics = json.loads((repo / "metrics" / "lacp.json").read_text())
    assert metrics["run.locator"] == "lacp"  # the locator whose proposals the run used
    assert all(isinstance(v, (int, float)) for k, v in metrics.items() if k.startswith("lacp."))
    note = json.loads((repo / "data" / "locator" / "locator.json").read_text())
    assert note["method"] == "lacp" and note["trained"] and note["searches"] == 2
    results = json.loads((repo / "data" / "locator" / "test.json").read_text())["results"]
    assert min(d["segment"][0] for v in results.values() for d in v) >= 0

    # Its weights, in the authors' layout, are a checkpoint: loading them instead of training gives the
    # same proposals, byte for byte.
    checkpoint = shutil.copy(repo / "data" / "locator" / "lacp_model.pt", tmp_path / "lacp_model.pt")
    trained = {s: (repo / "data" / "locator" / f"{s}.json").read_bytes() for s in ("train", "test")}
    dvc(["exp", "run", "-S", "locate.method=lacp", "-S", f"locate.checkpoint={checkpoint}", "-n", "loaded"], repo)
    note = json.loads((repo / "data" / "locator" / "locator.json").read_text())
    assert note["trained"] is False and "locate.checkpoint" in note["checkpoint"]
    assert note["checkpoint_sha256"] == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    assert {s: (repo / "data" / "locator" / f"{s}.json").read_bytes() for s in ("train", "test")} == trained
    assert "lacp.train_loss" not in json.loads((repo / "metrics" / "lacp.json").read_text())


def test_a_checkpoint_of_another_shape_stops_locate_with_one_line(repo: Path, tmp_path: Path):
    import torch

    bad = tmp_path / "model_best.pkl"
    torch.save({"cls_module.conv_1.0.weight": torch.zeros(2, 2, 3)}, bad)
    result = dvc(["exp", "run", "locate", "-S", "locate.method=lacp", "-S", f"locate.checkpoint={bad}"], repo,
                 check=False)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "locate.checkpoint" in output and "missing keys" in output and "Traceback" not in output
