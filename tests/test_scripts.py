"""Every stage and bench script answers --help, and `python -m tspnet` lists its commands."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(REPO) for p in [*REPO.glob("stages/*.py"), *REPO.glob("bench/bench_*.py"),
                                               REPO / "bench" / "gpu_check.py"] if p.is_file())


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_help(script: Path):
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_cli_lists_its_commands():
    result = subprocess.run([sys.executable, "-m", "tspnet", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "evaluate" in result.stdout and "summarize" in result.stdout
