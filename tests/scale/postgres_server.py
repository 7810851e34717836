"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary cluster, a free port.

The server runs as the `postgres` system user when the tests run as root (postgres refuses root),
listens on 127.0.0.1 only and requires a password, so the Dagster instance must really read it
from DAGSTER_PG_PASSWORD.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster_dev_support import free_port

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
SUPERUSER = "dagster"
INSTALL_HINT = "apt-get install -y postgresql"
TOOLS = ("initdb", "postgres", "pg_isready", "psql")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or no way to run them here; says which."""


def find_bindir() -> Path | None:
    """The newest Debian server `bin/`, else the one `initdb` on PATH belongs to, else None."""

    def major(bindir: Path) -> int:
        version = bindir.parent.name
        return int(version) if version.isdigit() else -1

    debian = sorted((p.parent for p in DEBIAN_ROOT.glob("*/bin/initdb")), key=major, reverse=True)
    on_path = shutil.which("initdb")
    candidates = [*debian, *([Path(on_path).resolve().parent] if on_path else [])]
    return next((d for d in candidates if all((d / tool).exists() for tool in TOOLS)), None)


@dataclass(frozen=True)
class PostgresServer:
    """A running server; `env(db)` is what deploy/dagster.yaml reads."""

    bindir: Path
    host: str
    port: int
    user: str
    password: str

    def env(self, db_name: str) -> dict[str, str]:
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db_name,
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def query(self, db_name: str, sql: str) -> list[tuple[str, ...]]:
        """Rows of `sql` run with psql over TCP, as text columns."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                db_name,
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
        return [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]

    def create_database(self, db_name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", db_name):
            raise ValueError(f"unsafe database name: {db_name!r}")
        self.query("postgres", f"CREATE DATABASE {db_name}")


@contextmanager
def running_postgres(bindir: Path, startup_timeout: float = 30.0) -> Iterator[PostgresServer]:
    """Initialize a cluster in a temporary folder, start it, yield it; always stop and delete it."""
    as_user = _run_as_prefix()
    root = Path(tempfile.mkdtemp(prefix="bp-pg-"))
    proc: subprocess.Popen | None = None
    try:
        password = secrets.token_urlsafe(18)
        pwfile = root / "pw"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if as_user:
            owner = pwd.getpwnam(SERVER_USER)
            for path in (root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        root.chmod(0o700)
        data = root / "data"
        _run(
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            "initdb",
        )
        port = free_port()
        log = root / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    *as_user,
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(root),
                    "-h",
                    "127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_ready(bindir, port, proc, log, startup_timeout)
        yield PostgresServer(bindir, "127.0.0.1", port, SUPERUSER, password)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _run_as_prefix() -> list[str]:
    """`runuser -u postgres --` when root (postgres will not run as root), else nothing."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no `{SERVER_USER}` user to run the server "
            f"({INSTALL_HINT} creates it)"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and `runuser` is missing (util-linux)")
    return [runuser, "-u", SERVER_USER, "--"]


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({out.returncode}): {(out.stderr or out.stdout)[-2000:]}"
        )


def _wait_ready(bindir: Path, port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=False,
            timeout=10,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"postgres not ready after {timeout}s:\n{log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT) of the server's process group; SIGKILL if it hangs."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
