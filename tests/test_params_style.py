"""params.yaml is written as DVC writes it back after `dvc exp run -S`, so one override changes one line.

DVC applies `-S key=value` by loading params.yaml, merging the new values and
dumping the whole file again: flow lists become block lists, nulls become
empty, long strings move to their own line. A file already in that style
comes back byte for byte, and `dvc exp apply` of one changed value is a
one-line diff. These checks hold whatever keys the file has; after editing
params.yaml, `make params-style` rewrites it in this style.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import yaml
from dvc.utils.hydra import apply_overrides

from tests.dvc_repo import REPO, override


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_params_yaml_is_in_dvc_write_back_style(tmp_path: Path):
    path = shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    seed = yaml.safe_load(Path(path).read_text())["base"]["seed"]
    apply_overrides(path, [override("base.seed", seed)])  # the same value: only DVC's rewrite remains
    diff = changed_lines((REPO / "params.yaml").read_text(), Path(path).read_text())
    assert not diff, ("params.yaml is not in the style `dvc exp run -S` writes back, so every -S would rewrite "
                      "these lines; run `make params-style`:\n" + "\n".join(diff[:20]))


def test_one_override_changes_one_line(tmp_path: Path):
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text)
    seed = yaml.safe_load(text)["base"]["seed"]
    apply_overrides(path, [override("base.seed", seed + 1)])
    removed, added = changed_lines(text, path.read_text())
    assert removed.split()[1:3] == ["seed:", str(seed)] and added.split()[1:3] == ["seed:", str(seed + 1)]
    assert removed.split()[3:] == added.split()[3:]  # the comment stays


def test_a_file_in_another_style_is_seen(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 0\nclasses: [a, b]\n")
    apply_overrides(path, [override("base.seed", 0)])
    assert changed_lines("base:\n  seed: 0\nclasses: [a, b]\n", path.read_text()) == [
        "-classes: [a, b]", "+classes:", "+- a", "+- b"]
