"""Scratch copies of this repository for tests that run DVC end to end.

A copy holds the working tree's tracked and untracked-but-not-ignored files
(so uncommitted changes are tested too), its own git history with a local
identity, and runs the checkout's venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "tspnet tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@tspnet.invalid"
    return env


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "dvc"), *args], cwd, **kwargs)


def copy_repo(destination: Path) -> Path:
    """Copy the checkout's files (not data/, .venv, caches) into a fresh git repository."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    run(["git", "init", "-q", "-b", "main"], destination)
    run(["git", "config", "user.name", "tspnet tests"], destination)
    run(["git", "config", "user.email", "tests@tspnet.invalid"], destination)
    commit(destination, "copy of the checkout")
    return destination


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", message], repo)


def set_params(repo: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in the copy's params.yaml (comments are not kept: it is a scratch copy)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# A pipeline small enough to run end to end in seconds on two cores.
TINY = {
    "datasets.synthetic.generator.train_videos": 16,
    "datasets.synthetic.generator.test_videos": 8,
    "datasets.synthetic.generator.stream_dim": 16,
    "locate.builtin.epochs": 5,
    "train.iterations": 60,
    "train.update_every": 20,
    "train.log_every": 10,
}
