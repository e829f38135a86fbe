"""Naturalness of the prompts in a results table: perplexity and English-word share per method.

    python benchmarks/naturalness.py results/fsc/results.json

Reads the results.json that fsc_results.py writes (one best prompt per split and method) and
scores every prompt under a reference LM (default smollm2-135m, the agent's base LM). Prints a
markdown table of the per-method means (perplexity as the geometric mean, since it spans orders
of magnitude) and each prompt's numbers. This is PIN's claim to check: sparse-sql prompts read
more naturally than sql ones.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from stableprompt.models.loading import load_lm
from stableprompt.naturalness import naturalness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json written by fsc_results.py")
    parser.add_argument("--reference-lm", default="smollm2-135m")
    args = parser.parse_args()

    results = json.loads(Path(args.results).read_text())
    lm, tokenizer = load_lm(args.reference_lm)
    scores = naturalness([r["prompt"] for r in results], lm, tokenizer)
    methods = list(dict.fromkeys(r["method"] for r in results))
    print("| method | perplexity (geo. mean) | English-word share (mean) |")
    print("|---|---:|---:|")
    for method in methods:
        rows = [s for r, s in zip(results, scores, strict=True) if r["method"] == method]
        ppl = math.exp(statistics.mean(math.log(s["perplexity"]) for s in rows))
        share = statistics.mean(s["english_word_share"] for s in rows)
        print(f"| {method} | {ppl:,.0f} | {share:.2f} |")
    print("\n| split | method | prompt | perplexity | English-word share |")
    print("|---|---|---|---:|---:|")
    for r, s in zip(results, scores, strict=True):
        prompt = r["prompt"].replace("|", "\\|")
        print(
            f"| {r['split']} | {r['method']} | `{prompt}` | {s['perplexity']:,.0f} "
            f"| {s['english_word_share']:.2f} |"
        )


if __name__ == "__main__":
    main()
