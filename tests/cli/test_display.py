"""`run` shows a progress bar per file on a terminal and plain lines otherwise (a log stays
greppable): the real command, its stdout a pseudo-terminal or a pipe."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

from batch_pipeline.cli.demo import SAMPLES

CLI = Path(sys.executable).with_name("batch-pipeline")
BAR = "━"


def command(emulator, tmp_path: Path) -> list[str]:
    source = tmp_path / "tix.jsonl"
    shutil.copyfile(SAMPLES / "support_tickets.jsonl", source)  # 40 requests
    data = str(tmp_path / "data")
    return [str(CLI), "run", str(source), "--gateway", emulator.base_url, "--data-dir", data]


def on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run `argv` with its stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_bar_per_file(emulator, tmp_path: Path) -> None:
    code, output = on_a_terminal(command(emulator, tmp_path))
    assert code == 0, output
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # colours and cursor moves
    bars = [line for line in output.splitlines() if BAR in line and "tix" in line]
    assert bars and any("40/40 requests  1/1 batches" in line for line in bars), output
    assert "batches finished [" not in output  # the bar replaces the status lines


def test_a_pipe_gets_plain_lines(emulator, tmp_path: Path) -> None:
    done = subprocess.run(command(emulator, tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert BAR not in done.stdout and "\x1b[" not in done.stdout
    assert "tix: 1/1 batches finished [completed] succeeded=37 failed=3" in done.stdout
