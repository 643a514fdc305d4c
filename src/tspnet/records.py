"""What every metrics file says besides its numbers: whose run it is, and what was not computed.

Every metrics file a stage writes is flat JSON that starts with the run's
identity, the params that say which run the numbers belong to:

    {"run.dataset": "thumos14", "run.locator": "pmil", "run.seed": 0, "base.map@0.5": 33.65, ...}

so no table that puts two files side by side can mix runs silently (`python -m
tspnet headline` and `summarize` refuse files whose identities differ). A stage
writes identity keys only for params it declares in dvc.yaml, otherwise a
changed param would leave its file stale: every stage that writes metrics lists
the `IDENTITY_PARAMS` (tests/test_deps.py checks it).

A stage that runs but cannot compute its numbers (no features, say) writes no
number in their place, only a status record:

    {"run.dataset": "thumos14", ..., "tspnet.status": "not computed: no features (datasets.thumos14.sources.features)"}

A string is never mistaken for a measurement: `dvc exp show` prints it in a
`tspnet.status` column and leaves `tspnet.*` empty, `dvc metrics diff` shows
the number turning into `-`, and `summarize` leaves the run out of that
family's averages and says why. Any stage writes its records the same way:

    write_json(path, {**run_identity(params), **not_computed("lacp", "locate.method is builtin")})
    write_json(path, {**run_identity(params), **not_computed("train", "loaded from train.checkpoint",
                                                             verdict="not trained here")})

Outputs that are files rather than metrics (a model, a detections directory)
carry the same reason, so the next stage passes it on instead of computing
from nothing: `mark_not_computed(directory, reason)` / `not_computed_reason(directory)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The identity keys, and the params.yaml keys they are made of. `run.locator` is the locator whose
# proposals the run used: `proposals.locator`, or `locate.method` when that is the locate stage's
# output (`builtin`), so a run over LACP trained here reads `lacp`.
IDENTITY = ("run.dataset", "run.locator", "run.seed")
IDENTITY_PARAMS = ("dataset", "proposals.locator", "locate.method", "base.seed")
LOCATE_STAGE_LOCATOR = "builtin"  # proposals.locator naming the locate stage's own proposals
STATUS = "status"
NOT_COMPUTED = "not computed"
MARKER = "not_computed.json"


def param(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"params.yaml has no {dotted!r}")
        node = node[key]
    return node


def run_identity(params: dict[str, Any]) -> dict[str, Any]:
    """The identity keys of every metrics file: {"run.dataset": ..., "run.locator": ..., "run.seed": ...}."""
    locator = param(params, "proposals.locator")
    if locator == LOCATE_STAGE_LOCATOR:
        locator = param(params, "locate.method")
    return {"run.dataset": param(params, "dataset"), "run.locator": locator, "run.seed": param(params, "base.seed")}


def not_computed(prefix: str, reason: str, verdict: str = NOT_COMPUTED) -> dict[str, str]:
    """The record a stage writes instead of the `prefix.*` numbers it could not compute."""
    return {f"{prefix}.{STATUS}": f"{verdict}: {reason}"}


def no_features(dataset: str) -> str:
    """The reason every feature-reading stage gives when the dataset was fetched without features."""
    return f"no features (datasets.{dataset}.sources.features)"


def status_of(metrics: dict[str, Any], prefix: str) -> str | None:
    """The `prefix.status` record of a metrics dict, or None when its numbers were computed."""
    value = metrics.get(f"{prefix}.{STATUS}")
    return None if value is None else str(value)


def identity_of(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in IDENTITY if key in metrics}


def mark_not_computed(directory: Path, reason: str) -> None:
    """Write the marker that says an output directory holds no results, and why."""
    from tspnet.files import write_json

    write_json(Path(directory) / MARKER, {STATUS: f"{NOT_COMPUTED}: {reason}"})


def not_computed_reason(directory: Path) -> str | None:
    """The reason an output directory holds no results (without the "not computed: " lead), or None."""
    from tspnet.files import read_json

    path = Path(directory) / MARKER
    if not path.is_file():
        return None
    status = str(read_json(path).get(STATUS, ""))
    return status.split(": ", 1)[1] if status.startswith(f"{NOT_COMPUTED}: ") else status


class MixedRuns(ValueError):
    """Metrics files that name different runs were about to be read as one."""


def merge_records(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics files of one run ({file name: flat record}) as one flat dict.

    Refuses files whose identities differ (a stale file beside fresh ones);
    files without identity keys (written before they existed) are read as they are.
    """
    merged: dict[str, Any] = {}
    seen: dict[str, tuple[Any, str]] = {}
    for name, record in records.items():
        for key, value in identity_of(record).items():
            if key in seen and seen[key][0] != value:
                raise MixedRuns(f"{seen[key][1]} says {key} {seen[key][0]!r} but {name} says {value!r}")
            seen.setdefault(key, (value, name))
        merged.update(record)
    return merged
