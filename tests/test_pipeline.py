"""The DVC pipeline end to end on a tiny synthetic dataset, in a scratch copy of the repository."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.dvc_repo import REPO, TINY, VENV_BIN, commit, copy_repo, dvc, run, set_params
from tspnet.precision import native_bf16

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


def test_metrics_show_lists_the_headline(repo: Path):
    shown = dvc(["metrics", "show"], repo).stdout
    for key in ("tspnet.avg_0.1_0.7", "base.avg_0.1_0.7", "gain.avg_0.1_0.7", "alignment.spearman_tspnet"):
        assert key in shown, key


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


# ----------------------------------------------------------------------------- the README walkthrough


def test_make_repro_runs_dvc_in_the_venv(repo: Path):
    link = repo / ".venv"
    if not link.exists():
        link.symlink_to(REPO / ".venv")
    # `-o` keeps make from reinstalling into the borrowed venv (an editable install from the copy
    # would point the checkout's venv at this temporary directory).
    result = run(["make", "-o", ".venv/.installed", "repro"], repo)
    assert "dvc repro" in result.stdout and "up to date" in result.stdout + result.stderr


def test_change_a_hyperparameter_and_compare(repo: Path):
    result = dvc(["exp", "run", "-S", "train.lr=0.0001", "-n", "lr-1e-4"], repo)
    assert ran(result.stdout) == ["train", "infer", "evaluate"]
    table = dvc(["exp", "show", "--md", "--only-changed"], repo).stdout
    assert "lr-1e-4" in table and "tspnet.avg_0.1_0.7" in table
    table = dvc(["exp", "show", "--md", "--drop", ".*", "--keep",
                 "Experiment|train.lr|(base|tspnet|gain).avg_0.1_0.7"], repo).stdout
    header = table.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Experiment", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7", "train.lr"]
    diff = dvc(["metrics", "diff", "HEAD", "lr-1e-4"], repo).stdout
    assert "tspnet.avg_0.1_0.7" in diff
    dvc(["exp", "apply", "lr-1e-4"], repo)
    assert "lr: 0.0001" in (repo / "params.yaml").read_text()
    run(["git", "checkout", "--", "."], repo)
    dvc(["checkout", "--force"], repo)


def test_seed_sweep_and_its_summary(repo: Path):
    dvc(["exp", "run", "--queue", "-S", "base.seed=1,2", "-S", "base.threads=1"], repo)
    dvc(["queue", "start", "-j", "2"], repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc(["queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") >= 2, status
    summary = run([str(VENV_BIN / "python"), "-m", "tspnet", "summarize", "--json", "summary.json"], repo)
    assert "tspnet.avg_0.1_0.7" in summary.stdout
    table = json.loads((repo / "summary.json").read_text())
    assert table["metrics"]["tspnet.avg_0.1_0.7"]["n"] >= 2
    (repo / "summary.json").unlink()


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
    dvc(["plots", "diff", "HEAD", "lr-1e-4", "-o", "dvc_plots_diff"], repo)
    assert plot_page.scan_page((repo / "dvc_plots_diff" / "index.html").read_text()) == ([], [])
    if find_chromium():  # the stages' real CSVs, drawn with the network off (tests/test_plot_page.py has the rest)
        for html in (repo / "dvc_plots" / "index.html", repo / "dvc_plots_diff" / "index.html"):
            report = check_plots_page(html, repo / "dvc.yaml")
            assert report.ok, report.describe()
    for png in ("map_vs_tiou.png", "per_class_ap.png", "alignment.png", "train_losses.png", "center_labels.png"):
        assert (repo / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_share_through_a_remote(repo: Path, tmp_path: Path):
    remote = tmp_path / "storage"
    dvc(["remote", "add", "-d", "storage", str(remote)], repo)
    commit(repo, "add a DVC remote")
    run(["git", "tag", "-a", "tspnet-model@v1.0.0", "-m", "Registering artifact tspnet-model version v1.0.0"], repo)
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    dvc(["push"], repo)
    run(["git", "push", "-q", "--follow-tags", "origin", "main"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(["pull"], clone)
    status = dvc(["status"], clone).stdout
    assert "up to date" in status, status
    assert ran(dvc(["repro"], clone).stdout) == []  # nothing recomputed
    assert (clone / "data" / "model" / "model.pt").is_file()
    dvc(["artifacts", "get", str(clone), "tspnet-model", "-o", str(tmp_path / "model.pt")], tmp_path)
    assert (tmp_path / "model.pt").read_bytes() == (clone / "data" / "model" / "model.pt").read_bytes()


def test_switch_locator_on_real_annotations_without_features(repo: Path, shared_data: Path):
    # The README's locator comparison, with the registry's THUMOS14 and P-MIL sources pointed at the
    # reference copies instead of their URLs (no network here).
    thumos = shared_data / "thumos14"
    files = {"gt": "gt.json", "points": "point_labels.csv", "fps": "fps.json", "ambiguous": "Ambiguous_test.txt",
             "durations": "annotations_npy/duration.npy", "duration_videos": "annotations_npy/videoname.npy"}
    overrides = {f"datasets.thumos14.sources.{group}": str(thumos / name) for group, name in files.items()}
    overrides.update({f"locators.pmil.sources.{split}": str(shared_data / "proposals" / "pmil_base" / f"{split}.json")
                      for split in ("train", "test")})
    set_params(repo, overrides)
    commit(repo, "THUMOS14 and P-MIL from the reference copies")
    result = dvc(["exp", "run", "evaluate_base", "-S", "dataset=thumos14", "-S", "proposals.locator=pmil",
                  "-n", "pmil"], repo)
    assert ran(result.stdout) == ["fetch", "locate", "proposals", "evaluate_base"]
    table = dvc(["exp", "show", "--md", "--only-changed", "--keep", "base.avg.*"], repo).stdout
    assert "pmil" in table and "base.avg_0.1_0.7" in table
