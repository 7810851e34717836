"""Runs the emulator in-process: a real uvicorn server in a background thread plus the batch worker."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from batch_pipeline.emulator.app import EmulatorApp, make_providers
from batch_pipeline.emulator.config import EmulatorConfig
from batch_pipeline.emulator.responses import QuietCuts
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.worker import BatchWorker

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0


class EmulatorStartError(RuntimeError):
    """The server could not bind or did not come up."""


class EmbeddedEmulator:
    """A Bifrost-compatible gateway on loopback, for `demo`, `run` and tests (https when the
    config names a certificate).

    `port=0` picks a free port; `base_url` tells which. Stopping always releases the port, and a
    new instance on the same `state_dir` continues every file and batch where it stopped.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._temp_dir: Path | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._worker: BatchWorker | None = None
        self.runtime: Runtime | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT` of the running server."""
        if self.port is None:
            raise RuntimeError("emulator is not started")
        scheme = "https" if self.config.tls_certfile else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def state_dir(self) -> Path:
        """Where files and batches are persisted."""
        if self.config.state_dir is not None:
            return Path(self.config.state_dir)
        if self._temp_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="bifrost-emulator-"))
        return self._temp_dir

    def start(self) -> EmbeddedEmulator:
        """Bind the port, start the worker and serve; returns self once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise EmulatorStartError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        sock.listen(2048)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.runtime = Runtime(self.config, self.state_dir)
        providers = make_providers()
        self._worker = BatchWorker(self.runtime, providers)
        self._worker.start()
        app = EmulatorApp(self.runtime, providers).build()
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, QuietCuts) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(QuietCuts())
        server_config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
            ssl_certfile=self.config.tls_certfile,
            ssl_keyfile=self.config.tls_keyfile,
        )
        self._server = uvicorn.Server(server_config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="emulator-http", daemon=True
        )
        self._thread.start()
        if not self._wait_started():
            self.stop()
            raise EmulatorStartError("emulator HTTP server did not start")
        return self

    def _wait_started(self) -> bool:
        server, thread = self._server, self._thread
        assert server is not None and thread is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if server.started:
                return True
            if not thread.is_alive():
                return False
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        """Stop serving, finish the worker's step, release the port. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT_SECONDS)
        if self._worker is not None:
            self._worker.stop()
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._worker = self._socket = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> EmbeddedEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
