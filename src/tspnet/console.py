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


def disk_full_message(exc: OSError) -> str:
    where = f" while writing {exc.filename}" if exc.filename else ""
    return (f"the disk is full ({exc.strerror or exc}){where}: nothing half-written was kept; free some space "
            "(or set TSPNET_CACHE to a larger disk for downloads) and rerun")


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn a user error into one clear line and exit status 2: bad input (tspnet.files.DataError, which
    includes bad params) or a full disk. Anything else is a bug and keeps its traceback."""
    from tspnet.files import DataError, is_disk_full

    try:
        yield
    except DataError as exc:
        logging.getLogger("tspnet").error("%s", " ".join(str(exc).split()))  # one line, whatever it quotes
        sys.exit(2)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        logging.getLogger("tspnet").error("%s", disk_full_message(exc))
        sys.exit(2)
