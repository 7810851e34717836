"""Seeded generator of OpenAI-style batch output and error files for the result-conversion bench.

Lines look like what OpenAI's batch API writes: chat completions (with today's usage details,
system fingerprints, occasional `length` finishes, quotes, newlines and non-ASCII text) and
embeddings (256 dimensions, the common `dimensions=256` setting), with about 5% of requests in
the error file (400 invalid requests, 429/500 responses, `batch_expired` error objects).
Same seed and sizes -> byte-identical files.
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import orjson

_VOCABULARY = (
    "the a of to and in is for that on with as this by be are from it at or an was which "
    "model result request customer order invoice refund shipping product review rating summary "
    "positive negative neutral category label extract field value date amount address name "
    "classification sentiment quality support ticket priority urgent answer question context "
    "naïve café résumé 東京 données Straße — “quoted” 'single' \"double\" tab\tnew\nline"
)
_WORDS = _VOCABULARY.split(" ")
_MODELS = ("gpt-4o-mini-2024-07-18",)
_EMBEDDING_MODEL = "text-embedding-3-small"
_HEX = "0123456789abcdef"
_ALNUM = string.ascii_letters + string.digits


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_HEX, k=n))


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(low, high)))


def _chat_line(rng: random.Random, index: int) -> dict:
    prompt = rng.randint(20, 900)
    completion = rng.randint(5, 250)
    finish = "length" if rng.random() < 0.03 else "stop"
    body = {
        "id": "chatcmpl-" + "".join(rng.choices(_ALNUM, k=29)),
        "object": "chat.completion",
        "created": 1_735_690_000 + index,
        "model": _MODELS[0],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": _text(rng, 8, 120),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_" + _hex(rng, 10),
    }
    return _output_line(rng, index, 200, body)


def _embedding_line(rng: random.Random, index: int, dims: int) -> dict:
    tokens = rng.randint(5, 400)
    vector = [round(rng.gauss(0.0, 0.06), 9) for _ in range(dims)]
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": _EMBEDDING_MODEL,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _output_line(rng, index, 200, body)


def _error_line(rng: random.Random, index: int) -> dict:
    roll = rng.random()
    if roll < 0.2:
        return {
            "id": "batch_req_" + _hex(rng, 24),
            "custom_id": f"request-{index}",
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window "
                "expired.",
            },
        }
    if roll < 0.35:
        status, kind, code = 429, "rate_limit_error", "rate_limit_exceeded"
    elif roll < 0.4:
        status, kind, code = 500, "server_error", None
    else:
        status, kind, code = 400, "invalid_request_error", None
    body = {
        "error": {
            "message": f"Invalid request: {_text(rng, 4, 20)}",
            "type": kind,
            "param": "max_tokens" if status == 400 else None,
            "code": code,
        }
    }
    return _output_line(rng, index, status, body)


def _output_line(rng: random.Random, index: int, status: int, body: dict) -> dict:
    return {
        "id": "batch_req_" + _hex(rng, 24),
        "custom_id": f"request-{index}",
        "response": {"status_code": status, "request_id": _hex(rng, 32), "body": body},
        "error": None,
    }


def generate(
    output_path: Path,
    error_path: Path,
    lines: int,
    *,
    seed: int = 8,
    error_share: float = 0.05,
    embedding_share: float = 0.10,
    dims: int = 256,
) -> None:
    """Write `lines` result lines split between an output file and an error file."""
    rng = random.Random(seed)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("wb") as out, error_path.open("wb") as err:
        for index in range(1, lines + 1):
            roll = rng.random()
            if roll < error_share:
                err.write(orjson.dumps(_error_line(rng, index)) + b"\n")
            elif roll < error_share + embedding_share:
                out.write(orjson.dumps(_embedding_line(rng, index, dims)) + b"\n")
            else:
                out.write(orjson.dumps(_chat_line(rng, index)) + b"\n")


def main() -> None:
    """Command line: write the two files for a given size and seed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    generate(
        args.out_dir / f"output-{args.lines}.jsonl",
        args.out_dir / f"errors-{args.lines}.jsonl",
        args.lines,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
