"""A run's final test scoring: several prompts on SST-2's test set with the default prefix store.

    python benchmarks/test_scoring.py [--prompts 3] [--json out.json]

A run ends by scoring its pool and the manual prompt on test. SST-2's 1,821 test sentences hold
~45,000 tokens, more than the scorer's prefix store keeps (20,000 tokens by default), so:
  - prompt by prompt, one `score` call each (what the trainer did before it scored the pool
    together): every prompt's call encodes every input again;
  - together, one `score` call for all prompts (what `Trainer.finish` does now): each input is
    encoded once, in store-bounded chunks.
Both in one process on the same model with an empty score cache and prefix store each, with
progress chunks on as in a CLI run; the together row runs first, so the peak RSS after it is
its own (the peak RSS after the second row is the larger of the two). Prints the date, machine
(CPU flags) and git revision.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import time

from scoring import PROMPTS, ROOT, machine, revision

from stableprompt.models import LocalScorer, load_lm
from stableprompt.tasks import get_task, load_kshot_dir


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def counted(scorer: LocalScorer) -> list[int]:
    """Count the prefixes `scorer` encodes (a one-element list, updated in place)."""
    count = [0]
    encode = scorer._encode_prefixes

    def counting(prefixes):
        count[0] += sum(p not in scorer.prefix_store for p in prefixes)
        encode(prefixes)

    scorer._encode_prefixes = counting
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    task = get_task("sst-2")
    inputs = [ex.text for ex in load_kshot_dir(args.data)["test"]]
    prompts = PROMPTS[: args.prompts]
    labels = list(task.label_words)
    model, tokenizer = load_lm(args.target, dtype="auto")
    rows = {}
    for mode in ("together", "prompt by prompt"):
        scorer = LocalScorer(model, tokenizer)
        scorer.progress = True
        encodings = counted(scorer)
        started = time.perf_counter()
        if mode == "together":
            scores = scorer.score(prompts, inputs, task.template, labels)
        else:
            scores = [scorer.score([p], inputs, task.template, labels)[0] for p in prompts]
        rows[mode] = {
            "seconds": round(time.perf_counter() - started, 1),
            "inputs_encoded": encodings[0],
            "peak_rss_gb_so_far": round(peak_rss_gb(), 2),
            "predictions": [s.argmax(-1).tolist() for s in scores],
        }
    same = rows["together"].pop("predictions") == rows["prompt by prompt"].pop("predictions")
    figures = {
        "date": datetime.date.today().isoformat(),
        "revision": revision(),
        "machine": machine(),
        "prompts": len(prompts),
        "test_inputs": len(inputs),
        "prefix_store_tokens": LocalScorer(model, tokenizer).prefix_store_tokens,
        "rows": rows,
        "same_predictions": same,
        "ratio": round(rows["prompt by prompt"]["seconds"] / rows["together"]["seconds"], 2),
    }
    print(f"{figures['date']} at {figures['revision']} on {figures['machine']}")
    print(f"{len(prompts)} prompts x {len(inputs):,} SST-2 test inputs, {args.target}")
    print("| scoring | seconds | inputs encoded | peak RSS so far (GB) |")
    print("|---|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['seconds']} | {r['inputs_encoded']:,} | {r['peak_rss_gb_so_far']} |")
    print(f"prompt by prompt / together: {figures['ratio']}x; same predictions: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
