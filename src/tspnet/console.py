"""Logs and progress bars, readable both in a terminal and in a captured log (dvc repro, CI)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def progress(iterable: Iterable[T], desc: str, unit: str = "it", enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar; redrawn at most every 5 s when stderr is not a terminal, so logs stay short."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else 5.0, **kwargs)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn a bad-input error (tspnet.files.DataError) into one clear line and exit status 2."""
    from tspnet.files import DataError

    try:
        yield
    except DataError as exc:
        logging.getLogger("tspnet").error("%s", exc)
        sys.exit(2)
