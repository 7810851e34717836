"""Where a command's own noise goes: Dagster's Python logs, warnings and each run's event log
land in one file per command, named in its summary; the terminal keeps the command's lines."""

from __future__ import annotations

import logging
import logging.handlers
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batch_pipeline.ledger.storage import DataPath, is_local

# Warnings Dagster raises about its own APIs (preview, beta, superseded): meant for the authors
# of definitions, never for the user of this command; every other warning goes to the log file.
_DAGSTER_NOTES = ("PreviewWarning", "BetaWarning", "SupersessionWarning")
_BUFFERED = 10_000
_opened: list[Path] = []  # the log files of this process, the latest last


def active() -> Path | None:
    """The log file this command writes (or wrote), if it opened one."""
    return _opened[-1] if _opened else None


def log_path(root: DataPath, command: str) -> Path:
    """A new log file for `command` under the data root's logs/ (a temp folder for s3://)."""
    folder = (
        Path(str(root)) / "logs"
        if is_local(root)
        else Path(tempfile.gettempdir()) / "batch-pipeline-logs"
    )
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"{command}-{stamp}-{os.getpid()}.log"


class CommandLog:
    """Records held in memory until `open` names the file they go to."""

    def __init__(self, held: logging.handlers.MemoryHandler) -> None:
        self.held = held
        self.handler: logging.FileHandler | None = None

    def open(self, root: DataPath, command: str) -> Path:
        """The log file of this command (see `log_path`), with what was held so far written to
        it and every later record sent there."""
        path = log_path(root, command)
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
        )
        self.held.setTarget(self.handler)
        self.held.flush()
        root_logger = logging.getLogger()
        root_logger.addHandler(self.handler)
        root_logger.removeHandler(self.held)
        _opened.append(path)
        return path


@contextmanager
def captured() -> Iterator[CommandLog]:
    """Within: every log record and warning of the process is held for the command's log file
    (Dagster logs while it loads, before the data root, and so the file, is known), and Dagster's
    notes about its own APIs are dropped. Everything is put back as it was on the way out."""
    import dagster as dg

    root = logging.getLogger()
    level = root.level
    held = logging.handlers.MemoryHandler(_BUFFERED, flushLevel=logging.CRITICAL + 1)
    log = CommandLog(held)
    with warnings.catch_warnings():
        for category in _DAGSTER_NOTES:
            warnings.filterwarnings("ignore", category=getattr(dg, category))
        logging.captureWarnings(True)
        root.addHandler(held)
        root.setLevel(logging.INFO)
        try:
            yield log
        finally:
            logging.captureWarnings(False)
            root.setLevel(level)
            for handler in (held, log.handler):
                if handler is not None:
                    root.removeHandler(handler)
                    handler.close()
