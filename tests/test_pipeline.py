"""The DVC pipeline end to end on a tiny synthetic dataset, in a scratch copy of the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import TINY, commit, copy_repo, dvc, set_params

pytestmark = pytest.mark.pipeline

STAGES = ["fetch", "locate", "proposals", "labels", "train", "infer", "evaluate_base", "evaluate"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy with tiny params, reproduced once and committed."""
    path = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    set_params(path, TINY)
    result = dvc(["repro"], path)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    commit(path, "tiny run")
    return path


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def lock_outputs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out.get("md5") for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_outputs_and_metrics(repo: Path):
    metrics = {}
    for name in ("proposals", "labels", "train", "infer", "base", "tspnet"):
        metrics.update(json.loads((repo / "metrics" / f"{name}.json").read_text()))
    for key in ("tspnet.map@0.5", "tspnet.avg_0.1_0.7", "base.avg_0.1_0.7", "gain.avg_0.1_0.7",
                "train.loss", "labels.action_proposals", "proposals.test.imported"):
        assert key in metrics, key
    assert metrics["gain.avg_0.1_0.7"] == pytest.approx(metrics["tspnet.avg_0.1_0.7"] - metrics["base.avg_0.1_0.7"])
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    for plot in ("map_vs_tiou.png", "map_vs_tiou.csv", "per_class_ap.csv", "train/plots/metrics/train/loss.tsv"):
        assert (repo / "plots" / plot).is_file(), plot
    results = json.loads((repo / "data" / "detections" / "tspnet.json").read_text())["results"]
    assert results and all(v.startswith("synthetic_test_") for v in results)


def test_second_repro_is_a_noop_and_status_is_clean(repo: Path):
    assert ran(dvc(["repro"], repo).stdout) == []
    assert "up to date" in dvc(["status"], repo).stdout


def test_same_inputs_give_the_same_bytes(repo: Path):
    before = lock_outputs(repo)
    metrics_before = {p.name: p.read_bytes() for p in (repo / "metrics").glob("*.json")}
    assert ran(dvc(["repro", "--force"], repo).stdout) == STAGES
    assert lock_outputs(repo) == before
    assert {p.name: p.read_bytes() for p in (repo / "metrics").glob("*.json")} == metrics_before


def test_an_inference_param_reruns_only_inference_and_evaluation(repo: Path):
    result = dvc(["exp", "run", "-S", "infer.aba_iou=0.5"], repo)
    assert ran(result.stdout) == ["infer", "evaluate"]
    result = dvc(["exp", "run", "-S", "infer.nms_sigma=0.5"], repo)
    assert ran(result.stdout) == ["infer", "evaluate_base", "evaluate"]
    dvc(["exp", "apply", "HEAD"], repo, check=False)
    dvc(["checkout", "--force"], repo)
