"""Logging for the workflow's scripts: everything (including warnings and the final error) goes to the
rule's single ``log:`` file, so a failed job explains itself without the Snakemake console."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def logged(log_path: str | Path, name: str = "il6axis") -> Iterator[logging.Logger]:
    """Send the ``il6axis`` loggers and Python warnings to ``log_path`` for the duration of a script."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logger = logging.getLogger(name)
    try:
        yield logger
    except Exception as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        print(f"ERROR ({type(exc).__name__}): {exc}\n(see {log_path})", file=sys.stderr)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
