"""Scratch copies of this repository for tests that run DVC end to end.

A copy holds the working tree's tracked and untracked-but-not-ignored files
(so uncommitted changes are tested too), its own git history with a local
identity, and runs the checkout's venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def environment() -> dict[str, str]:
    # As a user's shell: not a sub-make of `make test` (which would print "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
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


def hydra_value(value: Any) -> str:
    """A value in the override grammar of `dvc exp run -S` (Hydra's): strings quoted, mappings and lists nested."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hydra_value(item) for item in value) + "]"
    return json.dumps(value)  # numbers, true/false, null


def override(dotted: str, value: Any) -> str:
    return f"{dotted}={hydra_value(value)}"


def set_params(repo: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in the copy's params.yaml exactly as `dvc exp run -S key=value` would.

    A new key is added (`+key=...`); a mapping replaces a mapping whole (`~key` first), as Hydra
    would otherwise merge the two.
    """
    from dvc.utils.hydra import apply_overrides

    params = yaml.safe_load((repo / "params.yaml").read_text())
    missing = object()

    def current(dotted: str) -> Any:
        node = params
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return missing
            node = node[key]
        return node

    args = []
    for dotted, value in overrides.items():
        old = current(dotted)
        if isinstance(value, dict) and isinstance(old, dict):
            args += [f"~{dotted}", "+" + override(dotted, value)]
        else:
            args.append(("+" if old is missing else "") + override(dotted, value))
    apply_overrides(repo / "params.yaml", args)


def rewrite_in_dvc_style(path: Path) -> None:
    """Rewrite a params file as DVC writes one back after `-S` (a no-op override: the same values)."""
    from dvc.utils.hydra import apply_overrides

    seed = yaml.safe_load(Path(path).read_text())["base"]["seed"]
    apply_overrides(path, [override("base.seed", seed)])


# A pipeline small enough to run end to end in seconds on two cores.
TINY = {
    "datasets.synthetic.generator.train_videos": 16,
    "datasets.synthetic.generator.test_videos": 8,
    "datasets.synthetic.generator.stream_dim": 16,
    "locate.builtin.epochs": 5,
    "locate.lacp.iterations": 10,  # LACP (locate.method=lacp): a few steps, two searches
    "locate.lacp.search_every": 5,
    "locate.lacp.hidden": 32,
    "train.iterations": 60,
    "train.update_every": 20,
    "train.log_every": 10,
}


if __name__ == "__main__":  # `make params-style`
    rewrite_in_dvc_style(REPO / "params.yaml")
