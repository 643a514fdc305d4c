"""dvc.yaml lists, for every stage, exactly the library modules its script imports, and the identity params.

A module a stage imports but dvc.yaml does not list would let an edit leave the
stage "up to date" with outputs of the old code; one listed but not imported
reruns the stage for nothing. The imports are read from the source (every
`import` statement, also inside functions, except under `if TYPE_CHECKING:`),
transitively within src/tspnet/. The glue module `tspnet.pipeline` holds one
function per stage and imports library modules inside those functions, so for
it only its module-level imports and the functions a stage reaches count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tspnet.records import IDENTITY_PARAMS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "tspnet"
GLUE = "tspnet.pipeline"


def load_dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def module_path(name: str) -> Path | None:
    """src/tspnet/a/b.py or src/tspnet/a/b/__init__.py for `tspnet.a.b`; None outside the package."""
    parts = name.split(".")
    if parts[0] != "tspnet":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(node: ast.AST, top_level_only: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Import statements under `node`, skipping `if TYPE_CHECKING:` bodies (and function bodies if asked)."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and is_type_checking(child):
            found += [n for n in child.orelse if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if isinstance(child, ast.ClassDef):
                found += import_statements(child, top_level_only)
            continue
        else:
            found += import_statements(child, top_level_only)
    return found


def imported_modules(statements: list[ast.Import | ast.ImportFrom], package: str) -> set[str]:
    """Names of the tspnet modules these statements import (a package's __init__ included)."""
    names = set()
    for statement in statements:
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - statement.level + 1] + [base]).strip(".")
            targets = [base] + [f"{base}.{alias.name}" for alias in statement.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                if module_path(".".join(parts[:i])) is not None:
                    names.add(".".join(parts[:i]))
    return names


def glue_imports(tree: ast.Module, entry_points: set[str] | None) -> set[str]:
    """Modules the glue module imports at its top level and in the functions reachable from `entry_points`."""
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    statements = import_statements(tree, top_level_only=True)
    todo, reached = list(functions if entry_points is None else entry_points & set(functions)), set()
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        statements += import_statements(functions[name])
        todo += [n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions]
    return imported_modules(statements, "tspnet")


def stage_modules(script: Path) -> set[Path]:
    """Every file of src/tspnet/ that running `script` can import."""
    tree = ast.parse(script.read_text())
    glue_entries: set[str] | None = set()
    for statement in import_statements(tree):
        if isinstance(statement, ast.ImportFrom) and statement.module == GLUE:
            glue_entries |= {alias.name for alias in statement.names}
        elif any(alias.name == GLUE or f"{statement.module}.{alias.name}" == GLUE
                 for alias in statement.names if isinstance(statement, (ast.Import, ast.ImportFrom))):
            glue_entries = None  # the whole module is used
    todo = list(imported_modules(import_statements(tree), "tspnet"))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name)
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = glue_imports(tree, glue_entries) if name == GLUE else imported_modules(import_statements(tree), package)
        todo += list(found)
    return {module_path(name) for name in seen}


STAGES = load_dvc_yaml()["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_modules_it_imports(stage: str):
    spec = STAGES[stage]
    script = REPO / spec["cmd"].split()[1]
    wanted = {str(p.relative_to(REPO)) for p in stage_modules(script)}
    listed = {d for d in spec.get("deps", []) if d.startswith("src/tspnet/")}
    missing, extra = sorted(wanted - listed), sorted(listed - wanted)
    assert not missing and not extra, (
        f"stage {stage}: dvc.yaml deps should list exactly the modules {script.name} imports; "
        f"add {missing}, remove {extra}")
    assert str(script.relative_to(REPO)) in spec["deps"]


def metrics_files(spec: dict) -> list[str]:
    entries = [*spec.get("metrics", []), *spec.get("outs", [])]
    paths = [next(iter(e)) if isinstance(e, dict) else e for e in entries]
    return [p for p in paths if p.startswith("metrics/")]


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if metrics_files(STAGES[s])))
def test_stages_writing_metrics_read_the_identity_params(stage: str):
    # The identity a metrics file carries must be a param of its stage, or a changed seed would leave it stale.
    params = STAGES[stage].get("params", [])
    covered = {p for p in params if isinstance(p, str)}
    for dotted in IDENTITY_PARAMS:
        parts = dotted.split(".")
        assert any(".".join(parts[:i]) in covered for i in range(1, len(parts) + 1)), (stage, dotted)


def test_only_the_headline_is_declared_as_dvc_metrics():
    declared = [next(iter(e)) if isinstance(e, dict) else e
                for spec in STAGES.values() for e in spec.get("metrics", [])]
    assert declared == ["metrics/headline.json"]


def test_the_analysis_follows_lazy_imports_and_skips_type_checking(tmp_path: Path):
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tspnet import model\n"
                     "def f():\n    from tspnet import roi\n    import tspnet.losses\n")
    found = imported_modules(import_statements(tree), "tspnet")
    assert found == {"tspnet", "tspnet.roi", "tspnet.losses"}
    assert imported_modules(import_statements(tree, top_level_only=True), "tspnet") == set()
