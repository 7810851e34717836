"""Scan a large file's blocks on worker processes; the caller merges their outcomes in order.

Parsing, checking and normalizing lines is CPU-bound Python, so one process keeps one core busy.
Each worker runs `scan_block` with its own validator. Workers are forked straight from a process
that has a single thread, else through a fork server (forking a threaded process, such as a
Dagster run worker, can deadlock the child). Either way all workers of a pool descend from one
process, so they share the salt of `hash` that duplicate detection compares.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from batch_pipeline.inputs.block import BlockScan, BlockSettings, scan_block
from batch_pipeline.inputs.reader import InputChanged
from batch_pipeline.inputs.validate import LineValidator

WORKERS_ENV = "BATCH_PIPELINE_INPUT_WORKERS"
MAX_WORKERS = 8
PARALLEL_MIN_BYTES = 64 << 20  # below this, starting workers costs more than it saves
START_TIMEOUT_SECONDS = 60

log = logging.getLogger(__name__)

# A worker's state, set once by _start_worker.
_validator: LineValidator | None = None
_settings: BlockSettings | None = None
_file: int | None = None  # the input file, when blocks are sent as byte ranges


def worker_count(file_bytes: int) -> int:
    """How many worker processes should scan a file this large (0: scan in this process).

    `BATCH_PIPELINE_INPUT_WORKERS` sets the number (0 or 1: never); by default it is the CPUs
    this process may use, up to MAX_WORKERS, for files of at least PARALLEL_MIN_BYTES.
    """
    workers = configured_workers()
    if workers is None:
        if file_bytes < PARALLEL_MIN_BYTES:
            return 0
        workers = min(_usable_cpus(), MAX_WORKERS)
    return workers if workers > 1 else 0


def configured_workers() -> int | None:
    """The number `BATCH_PIPELINE_INPUT_WORKERS` sets, None when unset; ValueError when bad."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if not configured:
        return None
    if not configured.isdigit():
        raise ValueError(f"{WORKERS_ENV} must be a whole number, got {configured!r}")
    return int(configured)


class BlockPool:
    """Worker processes that scan the blocks of one file.

    With `path` (a local file), a block may be sent as its byte range: the worker reads it from
    the page cache rather than receiving a copy through a pipe.
    """

    def __init__(self, workers: int, settings: BlockSettings, path: str | None) -> None:
        if _single_threaded():
            context: multiprocessing.context.BaseContext = multiprocessing.get_context("fork")
        else:
            context = multiprocessing.get_context("forkserver")
            # Imported once by the fork server (if this process starts it), not by each worker;
            # "__main__" is the default entry: it spares each worker re-running the main module.
            context.set_forkserver_preload(["__main__", __name__])
        self._executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(settings, path)
        )

    @classmethod
    def start(
        cls, workers: int, settings: BlockSettings, path: str | None = None
    ) -> BlockPool | None:
        """A running pool, or None when this process cannot start workers (then scan inline)."""
        try:
            pool = cls(workers, settings, path)
        except (OSError, ValueError) as exc:
            log.warning("input scan workers unavailable (%s); scanning in one process", exc)
            return None
        try:
            pool._executor.submit(os.getpid).result(timeout=START_TIMEOUT_SECONDS)
        except (OSError, AssertionError, BrokenProcessPool, TimeoutError) as exc:
            # AssertionError: a daemonic process may not have children.
            log.warning("input scan workers did not start (%r); scanning in one process", exc)
            pool.close()
            return None
        return pool

    def submit(
        self, block: bytes | tuple[int, int], first_line: int, endpoint: str | None, last: bool
    ) -> Future[BlockScan]:
        """Scan a block, given as bytes or as (offset, length) in the file (see `scan_block`)."""
        return self._executor.submit(_scan, block, first_line, endpoint, last)

    def close(self) -> None:
        """Stop the workers, dropping blocks not yet started."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _single_threaded() -> bool:
    """True when this process runs one thread, native ones included (Linux tells; else ask
    Python, which knows only its own)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _start_worker(settings: BlockSettings, path: str | None) -> None:
    global _validator, _settings, _file
    _validator = LineValidator(settings.default_provider, settings.limits)
    _settings = settings
    _file = os.open(path, os.O_RDONLY) if path is not None else None


def _scan(
    block: bytes | tuple[int, int], first_line: int, endpoint: str | None, last: bool
) -> BlockScan:
    assert _validator is not None and _settings is not None, "not started by BlockPool"
    if isinstance(block, tuple):
        block = _read_range(*block)
    return scan_block(_validator, _settings, block, first_line, endpoint, last)


def _read_range(offset: int, length: int) -> bytes:
    assert _file is not None, "blocks sent as ranges need the pool's path"
    data = os.pread(_file, length, offset)
    while len(data) < length:
        more = os.pread(_file, length - len(data), offset + len(data))
        if not more:
            raise InputChanged("the input file shrank while it was read")
        data += more
    return data
