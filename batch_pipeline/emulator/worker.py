"""The background thread that moves batches through their statuses at the configured speed.

Each tick it answers at most `requests_per_second * elapsed` requests of each running batch,
appends the lines to the batch's part files and then records the new offsets; on restart the
part files are cut back to the recorded sizes, so a crash never duplicates or loses a line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from batch_pipeline.emulator.batches import (
    TERMINAL_STATUSES,
    GiveUpReason,
    LineOutcome,
    ProviderBatches,
)
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord

log = logging.getLogger(__name__)
COUNTER_FLUSH_SECONDS = 0.5


class BatchWorker:
    """Advances every unfinished batch; start() and stop() it with the server."""

    def __init__(self, rt: Runtime, providers: Mapping[str, ProviderBatches]) -> None:
        self._rt = rt
        self._providers = providers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step: dict[str, float] = {}
        self._last_flush = 0.0

    def start(self) -> None:
        """Cut part files back to their recorded sizes, then start the thread."""
        with self._rt.store.lock:
            batches = list(self._rt.store.batches.values())
        for batch in batches:
            if batch.status not in TERMINAL_STATUSES:
                self._truncate_parts(batch)
        self._thread = threading.Thread(
            target=self._loop, name="emulator-batch-worker", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Finish the current step, persist the counters and end the thread."""
        self._stop.set()
        self._rt.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._rt.counters.flush()

    def _truncate_parts(self, batch: BatchRecord) -> None:
        for suffix, size in (("out.part", batch.out_bytes), ("err.part", batch.err_bytes)):
            path = self._rt.store.batch_path(batch.id, suffix)
            if path.exists() and path.stat().st_size > size:
                with path.open("r+b") as handle:
                    handle.truncate(size)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("emulator batch worker step failed")
            now = time.monotonic()
            if now - self._last_flush >= COUNTER_FLUSH_SECONDS:
                self._rt.counters.flush()
                self._last_flush = now
            self._rt.wake.wait(self._rt.config.tick_interval)
            self._rt.wake.clear()

    def step(self) -> None:
        """One pass over every unfinished batch."""
        with self._rt.store.lock:
            batches = [
                b for b in self._rt.store.batches.values() if b.status not in TERMINAL_STATUSES
            ]
        for batch in batches:
            if self._stop.is_set():
                return
            provider = self._providers.get(batch.provider)
            if provider is not None:
                self._advance(provider, batch)

    def _advance(self, provider: ProviderBatches, batch: BatchRecord) -> None:
        config = self._rt.config
        now = time.time()
        expiring = batch.expire_requested or now >= batch.deadline_ts
        if batch.status == "validating":
            if not expiring and now < batch.created_ts + config.validation_delay:
                return
            provider.validate(self._rt, batch)
            self._last_step[batch.id] = time.time()
        if batch.status == "in_progress":
            if expiring:
                self._drain(provider, batch, "expired")
                self._finish(provider, batch, provider.expired_status)
            else:
                self._process(provider, batch)
        elif batch.status == "finalizing":
            if now >= batch.times.get("finalizing_at", now) + config.finalizing_delay:
                self._finish(provider, batch, provider.final_status(batch))
        elif (
            batch.status == "cancelling"
            and now >= batch.times.get("cancelling_at", now) + config.cancel_delay
        ):
            self._drain(provider, batch, "canceled")
            self._finish(provider, batch, provider.cancelled_status)

    def _process(self, provider: ProviderBatches, batch: BatchRecord) -> None:
        config = self._rt.config
        now = time.time()
        last = self._last_step.setdefault(batch.id, now)
        budget = min(int((now - last) * config.requests_per_second), config.chunk_size)
        if budget > 0:
            self._last_step[batch.id] = (
                now if budget == config.chunk_size else (last + budget / config.requests_per_second)
            )
            self._run_lines(
                provider, batch, budget, lambda line: provider.answer_line(self._rt, batch, line)
            )
        if batch.processed >= batch.total:
            with self._rt.store.lock:
                if batch.status != "in_progress":
                    return
                if provider.uses_finalizing:
                    batch.status = "finalizing"
                    batch.stamp("finalizing_at", time.time())
                    self._rt.store.save_batch(batch)
                    return
            self._finish(provider, batch, provider.final_status(batch))

    def _drain(self, provider: ProviderBatches, batch: BatchRecord, reason: GiveUpReason) -> None:
        """Give up on every request not answered yet (expiry or cancel)."""
        self._run_lines(
            provider, batch, None, lambda line: provider.give_up_line(batch, line, reason)
        )

    def _run_lines(
        self,
        provider: ProviderBatches,
        batch: BatchRecord,
        limit: int | None,
        handle: Callable[[bytes], LineOutcome],
    ) -> None:
        """Handle up to `limit` further requests, append their lines, then record progress."""
        store = self._rt.store
        counts = {"succeeded": 0, "failed": 0, "expired": 0, "canceled": 0}
        done = 0
        offset = batch.input_offset
        out_path = store.batch_path(batch.id, "out.part")
        err_path = store.batch_path(batch.id, "err.part")
        with (
            provider.input_path(self._rt, batch).open("rb") as source,
            out_path.open("ab") as out,
            err_path.open("ab") as err,
        ):
            source.seek(offset)
            while limit is None or done < limit:
                line = source.readline()
                if not line:
                    break
                offset += len(line)
                if not line.strip():
                    continue
                outcome = handle(line)
                counts[outcome.outcome] += 1
                done += 1
                if outcome.out:
                    out.write(outcome.out)
                if outcome.err:
                    err.write(outcome.err)
            out_size, err_size = out.tell(), err.tell()
        with store.lock:
            batch.input_offset = offset
            batch.processed += done
            batch.out_bytes, batch.err_bytes = out_size, err_size
            batch.succeeded += counts["succeeded"]
            batch.failed += counts["failed"]
            batch.expired += counts["expired"]
            batch.canceled += counts["canceled"]
            store.save_batch(batch)

    def _finish(self, provider: ProviderBatches, batch: BatchRecord, status: str) -> None:
        provider.publish(self._rt, batch)
        with self._rt.store.lock:
            batch.status = status
            batch.stamp(f"{status}_at", time.time())
            self._rt.store.save_batch(batch)
        self._last_step.pop(batch.id, None)
