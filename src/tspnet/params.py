"""params.yaml access, seeding and device choice: what every stage script does first."""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tspnet import precision
from tspnet.files import ParamsError

PARAMS_FILE = Path("params.yaml")
PRECISIONS = precision.PRECISIONS  # the values base.precision takes (tspnet.precision)
log = logging.getLogger(__name__)


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no params file (run the stage from the repository root, or pass --params)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter groups")
    return params


def group(params: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in params or not isinstance(params[name], dict):
        raise ParamsError(f"params.yaml has no group {name!r}")
    return params[name]


def dataset_entry(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, registry entry) of the dataset that `dataset:` selects."""
    name = params.get("dataset")
    registry = params.get("datasets", {})
    if name not in registry:
        raise ParamsError(f"params.yaml: dataset {name!r} is not in the registry `datasets` ({sorted(registry)})")
    return str(name), registry[name]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch's algorithms deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cuBLAS needs this for deterministic matmuls; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def select_device(name: str) -> torch.device:
    """`auto` takes CUDA when torch sees a GPU, else the CPU; an explicit CUDA request without one fails."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ParamsError(f"base.device is {name!r} but torch sees no CUDA device: set base.device to auto or cpu")
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    return device


def setup_torch(base: dict[str, Any]) -> torch.device:
    """Apply the `base` group: threads, seed, determinism, precision (tspnet.precision); return the device."""
    threads = int(base.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    seed_everything(int(base["seed"]))
    device = select_device(str(base.get("device", "auto")))
    precision.configure(str(base.get("precision", "fp32")), device)
    return device


def uses_bf16(base: dict[str, Any], device: torch.device) -> bool:
    """Whether the network runs under bfloat16 autocast (`setup_torch` has checked that `device` can)."""
    return str(base.get("precision", "fp32")) == "bf16"


def stage_arguments(description: str, paths: dict[str, str], keys: tuple[str, ...] = (), argv=None):
    """Parse a stage script's command line (`--params` plus one option per input/output path) and validate
    the params `keys` the stage reads (tspnet.schema) before it does any work.

    The defaults are the paths dvc.yaml declares, so `python stages/<name>.py`
    is the whole command there. `keys` are written as in dvc.yaml's `params:`
    (`train.roi_bins`, `datasets.${dataset}`). Bad params end the
    process with one line and exit status 2, like every other bad input.
    Returns (arguments, params as plain dicts, unchanged).
    """
    import argparse

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="parameter file (default: %(default)s)")
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, default=Path(default),
                            help="(default: %(default)s)")
    args = parser.parse_args(argv)
    from tspnet.console import reported_errors, setup_logging
    from tspnet.schema import validated

    setup_logging()
    with reported_errors():
        params = load_params(args.params)
        return args, validated(params, [interpolated(key, params) for key in keys])


def interpolated(key: str, params: dict[str, Any]) -> str:
    """A dvc.yaml params entry with its `${dotted.key}` references replaced by their values."""
    def value(match: re.Match) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, key)
