"""Run the local Bifrost-compatible gateway (emulator) until interrupted.

Serves /v1/files, /v1/batches and the inference endpoints on HOST:PORT with OpenAI and
Anthropic batch behaviour; state persists under --state-dir so a restart continues every batch.
Admin routes: GET /_emulator/health lists them. Request failures on demand: put [[fail:NNN]]
in a request's text.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

# knob -> (flag type, help); the defaults shown come from EmulatorConfig itself.
KNOBS: dict[str, tuple[type, str]] = {
    "validation_delay": (float, "seconds a new OpenAI batch stays `validating`"),
    "requests_per_second": (float, "requests each running batch answers per second"),
    "finalizing_delay": (float, "seconds an OpenAI batch stays `finalizing`"),
    "cancel_delay": (float, "seconds a batch stays `cancelling` before it is cancelled/ended"),
    "completion_window_seconds": (float, 'real seconds the "24h" completion window lasts'),
    "tick_interval": (float, "how often the batch worker wakes up, seconds"),
    "error_rate": (float, "share of requests (0..1) failing with HTTP 500, drawn with --seed"),
    "bad_answer_rate": (
        float,
        "share of structured-output answers (0..1) that are invalid JSON or a refusal",
    ),
    "seed": (int, "seed of the --error-rate draw"),
    "retrieve_404_seconds": (
        float,
        "a batch retrieve answers 404 for this long after create (Anthropic quirk)",
    ),
    "max_requests_per_batch": (int, "OpenAI validation fails a batch with more requests"),
    "max_body_bytes": (int, "largest accepted request body (Bifrost default 100 MB)"),
    "embedding_dimensions": (int, "embedding size when a request gives no `dimensions`"),
    "chunk_size": (int, "most requests one batch answers per worker tick"),
    "bedrock_role_arn": (str, "role ARN used by a Bedrock create without `role_arn` (key `arn`)"),
    "bedrock_min_records": (int, "fewest records a Bedrock job accepts (Bedrock quota, 100)"),
    "bedrock_max_records": (int, "most records a Bedrock job accepts (Bedrock quota, 50000)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every emulator knob on the sub-command parser."""
    from batch_pipeline.emulator.config import FAULT_KINDS, EmulatorConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "faults: --fault KIND[:key=value,...], KIND one of " + ", ".join(FAULT_KINDS) + ".\n"
        "  keys: count=N|always (default 1), routes=batch_retrieve+file_content (default all),\n"
        "  skip=N (let N matching requests through first), retry_after=SECONDS (rate_limit),\n"
        "  status=5xx (server_error), delay=SECONDS (slow, slow_answer, stall_download),\n"
        "  delay_max=SECONDS (slow: a delay drawn from [delay, delay_max]),\n"
        "  after_bytes=N (reset_download, stall_download), lines=N (malformed_output).\n"
        "  example: --fault rate_limit:count=3,retry_after=1 --fault slow:delay=5,routes=batch_list"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("data/emulator"),
        help="where files and batches persist across restarts (default: %(default)s)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="test timing: batches of ~10 requests end in < 1 s"
    )
    for name, (kind, text) in KNOBS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{text} (default: {EmulatorConfig.model_fields[name].default})",
        )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require a key: comma-separated keys read from environment variable VAR "
        "(sent as Authorization: Bearer, x-bf-vk or x-api-key)",
    )
    parser.add_argument(
        "--virtual-key-env",
        metavar="VAR",
        help="require a Bifrost virtual key as x-bf-vk: comma-separated keys read from "
        "environment variable VAR (with --api-key-env, both are required)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="arm a fault at start"
    )
    parser.add_argument(
        "--tls-certfile", type=Path, metavar="PEM", help="serve https with this certificate"
    )
    parser.add_argument("--tls-keyfile", type=Path, metavar="PEM", help="the certificate's key")


def parse_fault(spec: str) -> dict[str, Any]:
    """`KIND[:key=value,...]` -> the fields of a Fault; raises ValueError on a bad spec."""
    from batch_pipeline.emulator.config import FAULT_KINDS

    kind, _, rest = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
    fields: dict[str, Any] = {"kind": kind}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"fault option {pair!r} is not key=value")
        if key == "routes":
            fields["routes"] = tuple(filter(None, value.split("+")))
        elif key == "count" and value == "always":
            fields["count"] = None
        else:
            fields[key] = value
    return fields


def build_config(args: argparse.Namespace) -> Any:
    """The EmulatorConfig the flags describe; raises ValueError with a readable reason."""
    from pydantic import ValidationError

    from batch_pipeline.emulator.config import EmulatorConfig

    values: dict[str, Any] = {"host": args.host, "port": args.port, "state_dir": args.state_dir}
    values.update({name: getattr(args, name) for name in KNOBS if getattr(args, name) is not None})
    for field, variable in (("api_keys", args.api_key_env), ("virtual_keys", args.virtual_key_env)):
        if variable:
            raw = os.environ.get(variable, "")
            keys = [key.strip() for key in raw.split(",") if key.strip()]
            if not keys:
                raise ValueError(f"environment variable {variable} holds no key")
            values[field] = tuple(keys)
    values["faults"] = tuple(parse_fault(spec) for spec in args.fault)
    if args.tls_certfile or args.tls_keyfile:
        values.update(tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile)
    try:
        if args.fast:
            return EmulatorConfig.fast(**values)
        return EmulatorConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"batch-pipeline emulator: {exc}", file=sys.stderr)
        return 2
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorStartError

    emulator = EmbeddedEmulator(config)
    try:
        emulator.start()
    except EmulatorStartError as exc:
        print(f"batch-pipeline emulator: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"Bifrost emulator listening on {emulator.base_url} (state: {emulator.state_dir}); "
        "Ctrl-C stops it",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0
