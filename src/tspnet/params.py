"""params.yaml access, seeding and device choice: what every stage script does first."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tspnet import precision

PARAMS_FILE = Path("params.yaml")
PRECISIONS = precision.PRECISIONS  # the values base.precision takes (tspnet.precision)
log = logging.getLogger(__name__)


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no params file (run the stage from the repository root)")
    with open(path, "r", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of parameter groups")
    return params


def group(params: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in params or not isinstance(params[name], dict):
        raise KeyError(f"params.yaml has no group {name!r}")
    return params[name]


def dataset_entry(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, registry entry) of the dataset that `dataset:` selects."""
    name = params.get("dataset")
    registry = params.get("datasets", {})
    if name not in registry:
        raise KeyError(f"params.yaml: dataset {name!r} is not in the registry `datasets` ({sorted(registry)})")
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
            raise RuntimeError(f"base.device is {name!r} but torch sees no CUDA device")
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


def stage_arguments(description: str, paths: dict[str, str], argv=None):
    """Parse a stage script's command line: `--params` plus one option per input/output path.

    The defaults are the paths dvc.yaml declares, so `python stages/<name>.py`
    is the whole command there.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="parameter file (default: %(default)s)")
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, default=Path(default),
                            help="(default: %(default)s)")
    args = parser.parse_args(argv)
    from tspnet.console import setup_logging

    setup_logging()
    return args, load_params(args.params)
