"""Summaries of a sweep: experiments grouped by the params that differ, mean and spread in each group.

A repository's experiments are rarely one sweep: a seed sweep sits beside a
learning-rate trial and a THUMOS14 run. Averaging them together gives numbers
that belong to no run, so experiments are grouped by every param whose value
differs between them, the seed aside (or by the params `--group-by` names),
and each group gets its own table. Runs that cannot contribute are left out
and counted with their reason: failed, queued or running tasks (whose rows
in `dvc exp show` carry the baseline's metrics, not their own), runs whose
metrics files name different runs, and, for one family of metrics (`tspnet.*`
say), runs that recorded it as not computed (tspnet.records).

The inputs are `dvc exp show --json` (experiments, their params and states)
and each experiment's metrics files read from its git commit, all of
`metrics/*.json`, not only the headline that dvc.yaml declares. Experiments
pulled from other machines (`dvc exp pull`) are read the same way.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from tspnet.records import MixedRuns, merge_records, status_of

DEFAULT_METRICS = ("tspnet.avg_*", "base.avg_*", "gain.avg_*", "tspnet.map@0.5", "base.map@0.5",
                   "alignment.*")
SEED = "base.seed"
PARAMS_FILE = "params.yaml"
METRICS_DIR = "metrics"


@dataclass
class Run:
    """One experiment: its name, commit, params (flat, dotted) and metrics (all files merged)."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    left_out: str | None = None  # why the run contributes to no table


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def runs_from_exp_show(baselines: list[dict[str, Any]], read_metrics: Callable[[str], dict[str, dict]],
                       names: Iterable[str] = ()) -> list[Run]:
    """The experiments of `dvc exp show --json` (all, or those named by name or revision prefix).

    `read_metrics(rev)` returns the metrics files of a commit as {path: record}.
    """
    runs = []
    for baseline in baselines:
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state")
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                params = flatten(((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {})
                run = Run(str(rev.get("name") or experiment.get("name") or rev["rev"][:7]), str(rev["rev"]), params)
                if state in ("failed", "queued", "running") or rev.get("error"):
                    run.left_out = state or str((rev.get("error") or {}).get("msg", "error"))
                runs.append(run)
    names = list(names)
    if names:
        chosen = []
        for name in names:
            hits = [r for r in runs if r.name == name or r.rev.startswith(name)]
            if not hits:
                raise KeyError(f"no experiment or revision {name!r} in `dvc exp show`")
            chosen.append(hits[0])
        runs = chosen
    for run in runs:
        if run.left_out is None:
            try:
                run.metrics = merge_records(read_metrics(run.rev))
            except MixedRuns as exc:
                run.left_out = f"metrics files from different runs: {exc}"
            if not run.metrics and run.left_out is None:
                run.left_out = "no metrics files"
    return runs


def matches(value: Any, wanted: str) -> bool:
    """`--where key=wanted`: equal as YAML values (1 == 1.0, true), or as text."""
    try:
        parsed = yaml.safe_load(wanted)
    except yaml.YAMLError:
        parsed = wanted
    return value == parsed or str(value) == wanted


def where(runs: list[Run], conditions: Iterable[str]) -> list[Run]:
    for condition in conditions:
        key, sep, wanted = condition.partition("=")
        if not sep:
            raise ValueError(f"--where {condition!r}: expected PARAM=VALUE, e.g. dataset=thumos14")
        if runs and all(key not in run.params for run in runs):
            raise ValueError(f"--where {condition!r}: no experiment has a param {key!r}")
        runs = [run for run in runs if key in run.params and matches(run.params[key], wanted)]
    return runs


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def differing_params(runs: list[Run], ignore: Iterable[str] = (SEED,)) -> list[str]:
    """Params whose value is not the same in every run, in params.yaml order."""
    ignore = set(ignore)
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    return [k for k in keys if k not in ignore and len({_text(r.params.get(k)) for r in runs}) > 1]


@dataclass
class Group:
    params: dict[str, Any]
    runs: list[Run]
    also_differs: list[str]
    table: list[dict[str, Any]]
    not_computed: dict[str, list[tuple[str, str]]]  # metric family -> [(run, reason)]


def family(metric: str) -> str:
    return metric.split(".", 1)[0]


def statistics(runs: list[Run], patterns: Iterable[str]) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Per metric matching `patterns`: n, mean, sample std (ddof 1), min, max over the runs that have it."""
    patterns = list(patterns)
    names: list[str] = []
    for run in runs:
        for key, value in run.metrics.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in names and any(fnmatch.fnmatchcase(key, p) for p in patterns):
                names.append(key)
    # In the order of the patterns, then of appearance.
    names.sort(key=lambda n: next(i for i, p in enumerate(patterns) if fnmatch.fnmatchcase(n, p)))
    table = []
    for name in names:
        values = np.array([r.metrics[name] for r in runs if isinstance(r.metrics.get(name), (int, float))],
                          dtype=np.float64)
        table.append({"metric": name, "n": len(values), "mean": float(values.mean()),
                      "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                      "min": float(values.min()), "max": float(values.max())})
    families = sorted({family(p) for p in patterns if "*" not in family(p)} | {family(n) for n in names})
    not_computed = {}
    for prefix in families:
        missing = [(r.name, status) for r in runs if (status := status_of(r.metrics, prefix)) is not None]
        if missing:
            not_computed[prefix] = missing
    return table, not_computed


def by_seed(run: Run) -> tuple:
    seed = run.params.get(SEED)
    return (0, seed, run.name) if isinstance(seed, int) else (1, 0, run.name)


def group_runs(runs: list[Run], patterns: Iterable[str] = DEFAULT_METRICS,
               group_by: Iterable[str] | None = None) -> tuple[list[str], list[Group]]:
    """(the params grouped by, one Group per distinct combination of their values, in order of appearance)."""
    patterns = list(patterns)
    keys = differing_params(runs) if group_by is None else list(group_by)
    for key in keys:
        if runs and all(key not in run.params for run in runs):
            raise ValueError(f"--group-by {key}: no experiment has this param")
    grouped: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        grouped.setdefault(tuple(_text(run.params.get(k)) for k in keys), []).append(run)
    groups = []
    for members in grouped.values():
        members = sorted(members, key=by_seed)
        table, not_computed = statistics(members, patterns)
        groups.append(Group({k: members[0].params.get(k) for k in keys}, members,
                            [k for k in differing_params(members) if k not in keys], table, not_computed))
    return keys, groups


def summarize(runs: list[Run], patterns: Iterable[str] = DEFAULT_METRICS, group_by: Iterable[str] | None = None,
              conditions: Iterable[str] = ()) -> dict[str, Any]:
    """The whole summary as plain data (what `--json` writes; `format_summary` prints it)."""
    left_out = [{"experiment": r.name, "reason": r.left_out} for r in runs if r.left_out is not None]
    usable = where([r for r in runs if r.left_out is None], conditions)
    keys, groups = group_runs(usable, patterns, group_by)
    return {
        "experiments": len(runs), "where": list(conditions), "group_by": keys, "auto": group_by is None,
        "left_out": left_out,
        "groups": [{
            "params": g.params,
            "experiments": [r.name for r in g.runs],
            "seeds": [r.params.get(SEED) for r in g.runs],
            "also_differs": g.also_differs,
            "metrics": {row["metric"]: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                        for k, v in row.items() if k != "metric"} for row in g.table},
            "not_computed": {prefix: [{"experiment": n, "reason": s} for n, s in rows]
                             for prefix, rows in g.not_computed.items()},
        } for g in groups],
    }


def _reasons(entries: list[dict[str, str]]) -> str:
    by_reason: dict[str, list[str]] = {}
    for entry in entries:
        by_reason.setdefault(entry["reason"], []).append(entry["experiment"])
    return "; ".join(f"{len(names)} {reason} ({', '.join(names)})" for reason, names in by_reason.items())


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    left_out = summary["left_out"]
    used = sum(len(g["experiments"]) for g in summary["groups"])
    head = f"{summary['experiments']} experiment(s)"
    if summary["where"]:
        head += f", {used} where {' and '.join(summary['where'])}"
    lines.append(head + (f"; left out {len(left_out)}: {_reasons(left_out)}" if left_out else ""))
    if summary["group_by"]:
        lines.append(f"grouped by {', '.join(summary['group_by'])}"
                     + (" (every param that differs, the seed aside)" if summary.get("auto", True) else ""))
    for index, group in enumerate(summary["groups"], 1):
        params = "  ".join(f"{k}={_text(v)}" for k, v in group["params"].items()) or "(all the same params)"
        seeds = ", ".join(str(s) for s in group["seeds"])
        lines += ["", f"[{index}] {params}",
                  f"    {len(group['experiments'])} run(s), seed {seeds}: {', '.join(group['experiments'])}"]
        if group["also_differs"]:
            lines.append(f"    also differs within this group: {', '.join(group['also_differs'])}")
        lines.append(f"    {'metric':<26} {'n':>3} {'mean':>9} {'± std':>8} {'min':>9} {'max':>9}")
        for name, row in group["metrics"].items():
            std = "-" if row["std"] is None else f"{row['std']:.3f}"
            lines.append(f"    {name:<26} {row['n']:>3} {row['mean']:>9.3f} {std:>8} {row['min']:>9.3f} "
                         f"{row['max']:>9.3f}")
        for prefix, entries in group["not_computed"].items():
            lines.append(f"    {prefix}.*: left out {len(entries)}: {_reasons(entries)}")
        if not group["metrics"]:
            lines.append("    (no metric of these runs matches the patterns)")
    if not summary["groups"]:
        lines.append("no experiment to summarize")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- reading a repository


def exp_show(repo: str = ".") -> list[dict[str, Any]]:
    """`dvc exp show --json` of the repository: its baseline (HEAD) and the experiments on it."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def git_metrics(rev: str, repo: str = ".", directory: str = METRICS_DIR) -> dict[str, dict[str, Any]]:
    """Every `directory/*.json` of a commit, {path: record}."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout

    listed = git("ls-tree", "--name-only", rev, f"{directory}/").split()
    return {path: json.loads(git("show", f"{rev}:{path}")) for path in listed if path.endswith(".json")}
