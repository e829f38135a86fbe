"""Scored sequences per second through OpenAIScorer against a local llama.cpp server.

A sequence is one (prompt, input, label word) scored with exact echoed log-probs. Each
concurrency level gets a fresh scorer (empty cache) and its own prompts, so nothing is a cache hit.

    python benchmarks/remote.py                       # starts llama_cpp.server on a free port
    python benchmarks/remote.py --url http://127.0.0.1:8000 --model smollm2-135m --batch-size 16
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # reuse the test suite's server launcher
from scoring import machine, revision  # noqa: E402  (benchmarks/scoring.py, same folder)

DATA = ROOT.parent / "shared" / "data" / "fsc" / "16-shot" / "sst-2" / "16-42" / "train.tsv"
TEMPLATE = "Review: {input} {prompt} Sentiment:"
LABELS = [" terrible", " great"]
PROMPTS = [
    "Overall it was",
    "In short, the film is",
    "All in all",
    "My verdict:",
    "Honestly,",
    "To sum up, it is",
    "The movie was",
    "I found it",
    "In a word",
    "Critics said",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server; default: start llama_cpp.server")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--inputs", type=int, default=8, help="SST-2 train inputs per level")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per level")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per request")
    parser.add_argument("--levels", default="1,2,4,8")
    args = parser.parse_args()

    from stableprompt.models.remote import OpenAIScorer

    inputs = [line.rsplit("\t", 1)[0] for line in DATA.read_text().splitlines()[1:]]
    inputs = inputs[: args.inputs]
    server = None
    if args.url is None:
        import llama_cpp
        from test_remote import LlamaServer, free_port

        from stableprompt.models.loading import ALIASES, fetch_alias_gguf

        gguf = fetch_alias_gguf(ALIASES["smollm2-135m"])
        server = LlamaServer(gguf, free_port(), Path("/tmp/stableprompt-bench-llama.log"))
        server.start()
        args.url, backend = server.url, f"llama-cpp-python {llama_cpp.__version__}"
    else:
        backend = args.url
    levels = [int(c) for c in args.levels.split(",")]
    rows = []
    try:
        for i, concurrency in enumerate(levels):
            scorer = OpenAIScorer(args.model, [args.url], concurrency=concurrency,
                                  batch_size=args.batch_size)  # fmt: skip
            _ = scorer.capabilities  # probe outside the timing
            prompts = [f"{p} ({i})" for p in PROMPTS[: args.prompts]]  # fresh per level
            start = time.perf_counter()
            scorer.score(prompts, inputs, TEMPLATE, LABELS)
            seconds = time.perf_counter() - start
            n = len(prompts) * len(inputs) * len(LABELS)
            rows.append((concurrency, n, seconds, n / seconds, scorer.capabilities.batch))
            mode = scorer.capabilities.mode
            scorer.close()
    finally:
        if server is not None:
            server.stop()

    print(f"date {datetime.date.today()}  revision {revision()}  machine {machine()}")
    print(f"server {backend}  scoring mode {mode}  batch {args.batch_size}  labels {LABELS}")
    print("| concurrency | sequences | seconds | sequences/s | batched requests |")
    print("|---:|---:|---:|---:|:---:|")
    for concurrency, n, seconds, rate, batched in rows:
        batched = "yes" if batched else "no"
        print(f"| {concurrency} | {n} | {seconds:.2f} | {rate:.2f} | {batched} |")


if __name__ == "__main__":
    main()
