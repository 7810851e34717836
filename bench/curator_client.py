"""One bespokelabs-curator batch run against the emulator, offline; run by bench_curator.py with
curator's own interpreter (its own venv), never imported by this package.

It sets curator's and its dependencies' offline switches before importing them, refuses any
connection that is not loopback (so a hidden download fails loudly), sends N chat prompts in
OpenAI batch mode to `<base-url>/v1` with `?provider=openai` on every call (Bifrost, and so the
emulator, need the provider on the files and batches routes; curator has no option for it, so
its own client gets a default query), and prints one JSON line: responses and the phases.
"""

import argparse
import json
import os
import sys
import time

STARTED = time.time()
OFFLINE = {
    "TELEMETRY_ENABLED": "false",  # curator's PostHog telemetry
    "CURATOR_VIEWER": "0",  # curator's hosted viewer
    "CURATOR_DISABLE_RICH_DISPLAY": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm fetches its cost map from GitHub otherwise
    "LITELLM_TELEMETRY": "False",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
os.environ.update(OFFLINE)
for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "BESPOKE_API_KEY"):
    os.environ.pop(name, None)
REFUSED: list[str] = []


def _loopback(host: object) -> bool:
    text = host.decode() if isinstance(host, bytes) else str(host)
    return host is None or text.startswith(("127.", "::1", "localhost"))


def _guard(event: str, args: tuple) -> None:
    """Refuse every connection and name lookup that is not loopback."""
    if event == "socket.connect" and isinstance(args[1], tuple) and not _loopback(args[1][0]):
        REFUSED.append(repr(args[1]))
        raise ConnectionRefusedError(f"offline: refused {args[1]!r}")
    if event == "socket.getaddrinfo" and not _loopback(args[0]):
        REFUSED.append(repr(args[0]))
        raise OSError(f"offline: refused lookup of {args[0]!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--prompts", required=True, help="a JSON list of prompt strings")
    parser.add_argument("--poll", type=int, default=1)
    parser.add_argument("--work", required=True, help="curator's working folder (fresh)")
    args = parser.parse_args()
    sys.addaudithook(_guard)
    with open(args.prompts, encoding="utf-8") as source:
        prompts = json.load(source)
    from bespokelabs import curator

    imported = time.time()

    class Prompter(curator.LLM):
        def prompt(self, row: dict) -> str:
            return row["prompt"]

        def parse(self, row: dict, response: str) -> dict:
            return {"idx": row["idx"], "response": response}

    llm = Prompter(
        model_name="gpt-4o-mini",
        backend="openai",
        batch=True,
        backend_params={
            "base_url": args.base_url.rstrip("/") + "/v1",
            "api_key": "sk-emulator",
            "batch_check_interval": args.poll,
            "require_all_responses": False,
        },
    )
    processor = llm._request_processor
    processor.client = processor.client.with_options(default_query={"provider": "openai"})
    rows = [{"idx": n, "prompt": text} for n, text in enumerate(prompts)]
    response = llm(rows, working_dir=args.work)
    responses = sum(1 for text in response.dataset["response"] if text)
    print(
        json.dumps(
            {
                "responses": responses,
                "import_s": imported - STARTED,
                "refused": REFUSED,
            }
        )
    )
    return 0 if not REFUSED else 1


if __name__ == "__main__":
    sys.exit(main())
