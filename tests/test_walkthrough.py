"""The README's walkthrough, run as the README writes it.

The commands are extracted from the README text itself: every ```bash block
preceded by `<!-- walkthrough -->` (or `<!-- walkthrough: PLACE -->` for a
block run on another machine: `elsewhere`, `machine-a`, `machine-b`), in
README order, so the docs cannot drift from what is tested. Each block runs
as one bash script (`set -e`), in the directory where the previous block of
the same place ended. The changes are mechanical, listed in `substitutions`
and the `walked` fixture: tiny params and local copies of the THUMOS14 / P-MIL
files, committed with their run before step 1 (as the repository commits its
default run), the checkout's venv instead of a new one, and local folders for
the git and DVC remotes. Then the outputs are checked: each
issue the walkthrough once had (stale numbers, mixed summaries, a poisoned
workspace, a rewritten params.yaml, an unreadable headline, columns that do
not filter) must be gone.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dvc_repo import REPO, TINY, commit, copy_repo, environment, set_params

pytestmark = pytest.mark.pipeline

BLOCK = re.compile(r"^<!-- walkthrough(?::\s*(?P<place>[\w-]+))?\s*-->\n```bash\n(?P<body>.*?)^```", re.M | re.S)
NOT_COMPUTED = "not computed: no features (datasets.thumos14.sources.features)"


def substitutions(tmp: Path) -> list[tuple[str, str]]:
    """(README text, what the test runs instead), applied to every command in this order."""
    return [
        ("<git-remote>", str(tmp / "origin.git")),
        ("<dvc-remote>", str(tmp / "storage")),
        ("make venv", f"ln -sfn {REPO / '.venv'} .venv"),  # the checkout's venv, not a fresh install
        ("make repro", "make -o .venv/.installed repro"),  # the linked venv counts as installed
    ]


def strip_comment(line: str) -> str:
    """The line without its shell comment (a `#` after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(body: str) -> list[str]:
    joined = re.sub(r"\s*\\\n\s*", " ", body)  # continuation lines
    return [c for c in (strip_comment(line) for line in joined.splitlines()) if c]


def walkthrough(text: str) -> list[tuple[str, list[str]]]:
    """(place, commands) of every marked block, in README order."""
    return [(m["place"] or "workspace", commands(m["body"])) for m in BLOCK.finditer(text)]


@dataclass
class Ran:
    place: str
    command: str  # as the README writes it
    output: str  # stdout and stderr, in order


def run_block(place: str, cwd: Path, readme_commands: list[str], subs: list[tuple[str, str]],
              env: dict[str, str]) -> tuple[list[Ran], Path]:
    """Run one block as a bash script; return each command's output and the directory it ended in."""
    lines = ["set -eo pipefail", f"cd {shlex.quote(str(cwd))}"]
    for command in readme_commands:
        actual = command
        for old, new in subs:
            actual = actual.replace(old, new)
        lines += [f"printf '%s\\n' {shlex.quote('@@@ ' + command)}", actual]
    lines.append('printf "@@@PWD %s\\n" "$(pwd)"')
    result = subprocess.run(["bash", "-c", "\n".join(lines)], env=env, capture_output=False, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    if result.returncode != 0:
        raise AssertionError(f"README walkthrough block ({place}) failed with {result.returncode}:\n"
                             + "\n".join(readme_commands) + "\n--- output ---\n" + result.stdout[-6000:])
    parts = result.stdout.split("@@@ ")[1:]
    ran = []
    for command, part in zip(readme_commands, parts):
        assert part.startswith(command + "\n"), (command, part[:200])
        ran.append(Ran(place, command, part[len(command) + 1:]))
    end = Path(result.stdout.rsplit("@@@PWD ", 1)[1].strip())
    ran[-1].output = ran[-1].output.rsplit("@@@PWD ", 1)[0]
    return ran, end


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    """Run the whole walkthrough once; every test below reads what it printed and left behind."""
    tmp = tmp_path_factory.mktemp("walkthrough")
    workspace = copy_repo(tmp / "workspace")
    set_params(workspace, {**TINY, **reference_sources(shared_data)})
    env = {**environment(), "TSPNET_CACHE": str(tmp / "cache")}
    # The repository commits its default run (dvc.lock, metrics/, plots/): so does the copy.
    subprocess.run(["dvc", "repro", "--quiet"], cwd=workspace, env=env, check=True, capture_output=True)
    commit(workspace, "tiny params, THUMOS14 and P-MIL sources from local copies, and their run")
    (workspace / ".venv").symlink_to(REPO / ".venv")
    (workspace / ".git" / "info" / "exclude").write_text(".venv\n")
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(tmp / "origin.git")], check=True)
    places = {"workspace": workspace}
    ran: list[Ran] = []
    transcript = []
    for place, readme_commands in walkthrough((REPO / "README.md").read_text()):
        cwd = places.setdefault(place, tmp / place)
        cwd.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        block, places[place] = run_block(place, cwd, readme_commands, substitutions(tmp), env)
        transcript += [f"[{r.place}] $ {r.command}\n{r.output}" for r in block]
        transcript.append(f"[{place}] block took {time.monotonic() - start:.1f} s\n")
        ran += block
    # What a reader of the README would have seen, kept for anyone debugging a failure.
    (tmp / "transcript.txt").write_text("".join(transcript))
    return {"ran": ran, "places": places, "tmp": tmp}


def reference_sources(shared: Path) -> dict[str, str]:
    thumos = shared / "thumos14"
    files = {"gt": "gt.json", "points": "point_labels.csv", "fps": "fps.json", "ambiguous": "Ambiguous_test.txt",
             "durations": "annotations_npy/duration.npy", "duration_videos": "annotations_npy/videoname.npy"}
    sources = {f"datasets.thumos14.sources.{group}": str(thumos / name) for group, name in files.items()}
    sources.update({f"locators.pmil.sources.{split}": str(shared / "proposals" / "pmil_base" / f"{split}.json")
                    for split in ("train", "test")})
    return sources


def output(walked: dict, prefix: str, place: str = "workspace", nth: int = 0) -> str:
    hits = [r.output for r in walked["ran"] if r.place == place and r.command.startswith(prefix)]
    assert len(hits) > nth, f"the README walkthrough has no command starting with {prefix!r} ({place})"
    return hits[nth]


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return rows[0], rows[2:]


# ----------------------------------------------------------------------------- the extraction


def test_the_extraction_reads_marked_blocks_only():
    text = ("x\n<!-- walkthrough -->\n```bash\nmake repro   # note\ndvc exp run \\\n  -S 'a=#1'\n```\n"
            "```bash\nnot marked\n```\n<!-- walkthrough: machine-a -->\n```bash\necho hi\n```\n")
    assert walkthrough(text) == [("workspace", ["make repro", "dvc exp run -S 'a=#1'"]), ("machine-a", ["echo hi"])]


def test_the_readme_has_every_step():
    places = [place for place, _ in walkthrough((REPO / "README.md").read_text())]
    assert places.count("workspace") >= 8 and {"elsewhere", "machine-a", "machine-b"} <= set(places)


def test_every_readme_column_filter_drops_the_other_columns_first():
    # `--keep` alone adds columns back to all the others (issue #8: 48 columns were left); the walkthrough
    # checks the tables it prints, this checks the commands it cannot run (real data, other locators).
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    shows = [c for body in blocks for c in commands(body) if c.startswith("dvc exp show") and "--keep" in c]
    assert len(shows) >= 4
    for command in shows:
        assert "--drop '.*'" in command and "--only-changed" not in command, command


# ----------------------------------------------------------------------------- what a user sees


def test_make_repro_ends_with_the_headline(walked):
    lines = output(walked, "make repro").strip().splitlines()
    assert lines[-6].startswith("headline of the run (dataset synthetic, locator builtin, seed 0)")
    assert [line.split()[0] for line in lines[-5:-1]] == ["mAP", "base", "TSPNet", "gain"]
    assert lines[-1].startswith("Spearman")


def test_dvc_metrics_show_is_the_headline_within_about_120_columns(walked):
    text = output(walked, "dvc metrics show").rstrip()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 125, text
    for key in ("run.dataset", "run.locator", "run.seed", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7",
                "gain.avg_0.1_0.7"):
        assert key in lines[0], key
    details = output(walked, "dvc metrics show metrics/base.json")
    assert "base.map@0.5" in details and "tspnet.map@0.5" in details and "alignment.spearman_tspnet" in details


def test_column_filters_filter(walked):
    header, rows = md_table(output(walked, "dvc exp show --md --drop '.*' --keep 'Experiment|train.lr"))
    assert header == ["Experiment", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7", "train.lr"]
    header, rows = md_table(output(walked, "dvc exp show --md --drop '.*' --keep 'Experiment|run.dataset"))
    assert header == ["Experiment", "run.dataset", "run.locator", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7",
                      "tspnet.status"]
    header, rows = md_table(output(walked, "dvc exp show --md --drop '.*' --keep 'Experiment|base.seed"))
    assert header == ["Experiment", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7", "base.seed"]
    assert sum("[seeds-" in row[0] for row in rows) == 5


def test_apply_changes_one_line_of_params_yaml(walked):
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in output(walked, "git diff --stat params.yaml")


def test_the_thumos14_row_is_honest(walked):
    # No stale TSPNet number beside the P-MIL base score, and the workspace is still the default run.
    header, rows = md_table(output(walked, "dvc exp show --md --drop '.*' --keep 'Experiment|run.dataset"))
    table = {row[0].split()[-1].strip("[]"): dict(zip(header, row)) for row in rows}
    pmil = table["pmil"]
    assert pmil["run.dataset"] == "thumos14" and pmil["run.locator"] == "pmil"
    assert float(pmil["base.avg_0.1_0.7"]) > 0
    assert pmil["tspnet.avg_0.1_0.7"] == "-" and pmil["tspnet.status"] == NOT_COMPUTED
    assert table["workspace"]["run.dataset"] == "synthetic" and table["workspace"]["tspnet.status"] == "-"
    assert float(table["workspace"]["tspnet.avg_0.1_0.7"]) >= 0


def test_summarize_keeps_unrelated_runs_apart(walked):
    text = output(walked, "python -m tspnet summarize", nth=0)
    assert "grouped by base.threads, dataset, locate.method, proposals.locator, train.lr" in text
    assert text.count("\n[") == 4  # the sweep, the lr trial, the LACP run, the THUMOS14 run
    assert f"tspnet.*: left out 1: 1 {NOT_COMPUTED} (pmil)" in text
    assert "left out" not in text.splitlines()[0]  # nothing failed
    summary = json.loads((walked["places"]["workspace"] / "summary.json").read_text())
    (group,) = summary["groups"]
    assert sorted(group["seeds"]) == [0, 1, 2, 3, 4] and group["params"] == {}
    assert group["metrics"]["tspnet.avg_0.1_0.7"]["n"] == 5 and group["metrics"]["tspnet.avg_0.1_0.7"]["std"] > 0


def test_a_failed_run_leaves_the_workspace_alone(walked, tmp_path: Path):
    # Issue #8 item 3: a failing `--temp` run (here a THUMOS14 source that does not exist) changes nothing.
    workspace = walked["places"]["workspace"]
    env = {**environment(), "TSPNET_CACHE": str(walked["tmp"] / "cache")}
    before = subprocess.run(["git", "status", "--porcelain"], cwd=workspace, env=env, capture_output=True,
                            text=True).stdout
    result = subprocess.run(["dvc", "exp", "run", "--temp", "-S", "dataset=thumos14", "-S",
                             f"datasets.thumos14.sources.gt={tmp_path / 'missing.json'}"],
                            cwd=workspace, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "missing.json does not exist" in result.stdout + result.stderr
    after = subprocess.run(["git", "status", "--porcelain"], cwd=workspace, env=env, capture_output=True,
                           text=True).stdout
    assert after == before and (workspace / "metrics" / "proposals.json").is_file()


def test_lacp_trains_here_and_its_figure_joins_the_headline(walked):
    text = output(walked, "dvc metrics diff HEAD lacp")
    for key in ("lacp.avg_0.1_0.7", "base.avg_0.1_0.7", "tspnet.avg_0.1_0.7", "gain.avg_0.1_0.7"):
        assert key in text, key
    header, rows = md_table(output(walked, "dvc exp show --md --drop '.*' --keep 'Experiment|run.dataset"))
    lacp = {row[0].split()[-1].strip("[]"): dict(zip(header, row)) for row in rows}["lacp"]
    assert lacp["run.locator"] == "lacp" and lacp["run.dataset"] == "synthetic"


def test_metrics_diff_shows_every_number(walked):
    text = output(walked, "dvc metrics diff seeds-1 seeds-2")  # seeds 0 and 1
    assert "metrics/tspnet.json" in text and "tspnet.map@0.5" in text
    assert "metrics/tspnet.json" in output(walked, "dvc metrics diff HEAD lr-1e-4")


def test_plots_render(walked):
    page = walked["places"]["workspace"] / "dvc_plots" / "index.html"
    assert page.is_file() and "mAP vs tIoU" in page.read_text()


def test_a_clone_pulls_instead_of_recomputing(walked):
    assert "up to date" in output(walked, "dvc pull && dvc status", place="elsewhere")
    clone = walked["places"]["elsewhere"]
    assert (clone / "model.pt").read_bytes() == (clone / "data" / "model" / "model.pt").read_bytes()


def test_two_machines_summarize_as_one(walked):
    one = json.loads((walked["places"]["workspace"] / "summary.json").read_text())
    two = json.loads((walked["places"]["machine-a"] / "summary.json").read_text())

    def comparable(summary):
        (group,) = summary["groups"]
        return {"left_out": summary["left_out"], "params": group["params"], "seeds": sorted(group["seeds"]),
                "metrics": group["metrics"], "not_computed": group["not_computed"]}

    a, b = comparable(one), comparable(two)
    assert sorted(json.loads(json.dumps(a)).keys()) == sorted(b.keys())
    assert a["seeds"] == b["seeds"] == [0, 1, 2, 3, 4] and a["params"] == b["params"]
    assert a["metrics"].keys() == b["metrics"].keys()
    for name, row in a["metrics"].items():
        assert row == pytest.approx(b["metrics"][name], rel=1e-12, abs=1e-12), name
