"""The DVC pipeline end to end on a tiny synthetic dataset, in a scratch copy of the repository.

The README's walkthrough is tests/test_walkthrough.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.dvc_repo import REPO, TINY, commit, copy_repo, dvc, run, set_params
from tspnet import plots
from tspnet.precision import native_bf16
from tspnet.records import IDENTITY

pytestmark = pytest.mark.pipeline

STAGES = ["fetch", "locate", "evaluate_lacp", "proposals", "labels", "train", "infer", "evaluate_base",
          "evaluate"]


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
    files = ("proposals", "labels", "train", "infer", "base", "tspnet", "headline")
    for name in files:
        record = json.loads((repo / "metrics" / f"{name}.json").read_text())
        # Every metrics file says whose run it is.
        assert {k: record[k] for k in IDENTITY} == {"run.dataset": "synthetic", "run.locator": "builtin",
                                                    "run.seed": 0}, name
        metrics.update(record)
    for key in ("tspnet.map@0.5", "tspnet.avg_0.1_0.7", "base.avg_0.1_0.7", "gain.avg_0.1_0.7",
                "train.loss", "labels.action_proposals", "proposals.test.imported"):
        assert key in metrics, key
    assert metrics["gain.avg_0.1_0.7"] == pytest.approx(metrics["tspnet.avg_0.1_0.7"] - metrics["base.avg_0.1_0.7"])
    assert all(isinstance(v, (int, float)) for k, v in metrics.items() if k not in IDENTITY)  # flat
    assert not any(k.endswith(".status") for k in metrics)  # everything was computed
    for plot in ("map_vs_tiou.png", "map_vs_tiou.csv", "per_class_ap.csv", "train/plots/metrics/train/loss.tsv"):
        assert (repo / "plots" / plot).is_file(), plot
    results = json.loads((repo / "data" / "detections" / "tspnet.json").read_text())["results"]
    assert results and all(v.startswith("synthetic_test_") for v in results)


def test_metrics_show_lists_the_headline(repo: Path):
    shown = dvc(["metrics", "show"], repo).stdout
    for key in ("tspnet.avg_0.1_0.7", "base.avg_0.1_0.7", "gain.avg_0.1_0.7", "run.dataset"):
        assert key in shown, key
    assert "metrics/headline.json" in shown and "metrics/base.json" not in shown


def test_plot_csvs_have_the_columns_a_not_computed_run_writes(repo: Path):
    for stem, columns in {**plots.TRAIN_PLOTS, **plots.EVALUATE_PLOTS}.items():
        if columns is not None:
            assert tuple(pd.read_csv(repo / "plots" / f"{stem}.csv").columns) == columns, stem


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
    result = dvc(["exp", "run", "-S", "infer.aba_iou=0.5", "-n", "aba-0.5"], repo)
    assert ran(result.stdout) == ["infer", "evaluate"]
    result = dvc(["exp", "run", "-S", "infer.nms_sigma=0.5"], repo)
    assert ran(result.stdout) == ["infer", "evaluate_base", "evaluate"]
    run(["git", "checkout", "--", "."], repo)
    dvc(["checkout", "--force"], repo)


def test_bf16_runs_end_to_end_where_the_cpu_has_it_and_is_refused_elsewhere(repo: Path):
    result = dvc(["exp", "run", "-S", "base.precision=bf16", "-n", "bf16"], repo, check=False)
    if native_bf16(torch.device("cpu")):
        assert result.returncode == 0, result.stdout + result.stderr
        # The built-in locator stays float32: it reruns (it reads `base`) and writes the same bytes.
        assert ran(result.stdout) == ["locate", "train", "infer", "evaluate"]
        table = dvc(["exp", "show", "--md", "--only-changed"], repo).stdout
        assert "bf16" in table and "tspnet.avg_0.1_0.7" in table
    else:
        assert result.returncode != 0
        assert "base.precision is bf16" in result.stdout + result.stderr
    run(["git", "checkout", "--", "."], repo)
    dvc(["checkout", "--force"], repo)


def test_an_evaluation_change_does_not_retrain(repo: Path):
    # The stage deps are the modules each stage imports (tests/test_deps.py): editing the evaluation
    # reruns the two evaluation stages only, editing the file helpers every stage.
    changed = {}
    for module in ("evaluate.py", "headline.py", "files.py"):
        path = repo / "src" / "tspnet" / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            status = dvc(["status", "--json"], repo).stdout
        finally:
            path.write_bytes(original)
        changed[module] = sorted(json.loads(status))
    assert changed["evaluate.py"] == ["evaluate", "evaluate_base", "evaluate_lacp"]
    assert changed["headline.py"] == ["evaluate"]
    assert changed["files.py"] == sorted(STAGES)
    assert "up to date" in dvc(["status"], repo).stdout


# ----------------------------------------------------------------------------- the README walkthrough


def test_make_repro_ends_with_the_headline_when_nothing_reran(repo: Path):
    link = repo / ".venv"
    if not link.exists():
        link.symlink_to(REPO / ".venv")
    # `-o` keeps make from reinstalling into the borrowed venv (an editable install from the copy
    # would point the checkout's venv at this temporary directory).
    result = run(["make", "-o", ".venv/.installed", "repro"], repo)
    assert "up to date" in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-6].startswith("headline of the run (dataset synthetic, locator builtin, seed 0)")
    assert [line.split()[0] for line in lines[-4:-1]] == ["base", "TSPNet", "gain"]


def test_plots_render_offline(repo: Path):
    from tspnet import plot_page
    from tspnet.browser import check_plots_page, find_chromium

    if not (repo / plot_page.TEMPLATE_PATH).is_file():  # `make venv` writes it; the copy has no venv of its own
        plot_page.write_page_template(repo / plot_page.TEMPLATE_PATH)
    dvc(["plots", "show"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    for title in ("mAP vs tIoU", "Training losses", "Confidence vs quality", "Center labels"):
        assert title in page, title
    assert plot_page.scan_page(page) == ([], [])
    dvc(["plots", "diff", "HEAD", "aba-0.5", "-o", "dvc_plots_diff"], repo)
    assert plot_page.scan_page((repo / "dvc_plots_diff" / "index.html").read_text()) == ([], [])
    if find_chromium():  # the stages' real CSVs, drawn with the network off (tests/test_plot_page.py has the rest)
        for html in (repo / "dvc_plots" / "index.html", repo / "dvc_plots_diff" / "index.html"):
            report = check_plots_page(html, repo / "dvc.yaml")
            assert report.ok, report.describe()
    for png in ("map_vs_tiou.png", "per_class_ap.png", "alignment.png", "train_losses.png", "center_labels.png"):
        assert (repo / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
