"""Suffix batches cut by length vs fixed-size batches, on APPO's reward workload.

    python benchmarks/reward_batches.py [--repeats 4] [--prompts 4] [--inputs 16]

Workload: `prompts` 20-token prompts x `inputs` SST-2 train inputs (split 16-42) in StablePrompt's
template `{prompt}\\nInput: {input}\\nOutput:`, label words ` terrible`/` great`, target
smollm2-135m in fp32. There each input sits in the suffix, which runs through every layer for
every prompt, so the padding of a suffix batch is paid in full. Timed in one process, alternating:
  - cut: `LocalScorer` as it is (sorted by suffix length, a batch ends where padding would grow);
  - fixed: the same engine with one batch of up to 128 rows (the behaviour before the cuts).
Each repeat scores new prompts, so nothing is cached between repeats.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

from scoring import ROOT, machine, revision

from stableprompt.models import LocalScorer, load_lm
from stableprompt.models import scoring as engine_module
from stableprompt.tasks import get_task, load_kshot_dir

TEMPLATE = "{prompt}\nInput: {input}\nOutput:"
PROMPT = "Read the movie review below and say whether the reviewer liked the film or not, case"


def fixed_batches(lengths: list[int], max_rows: int) -> list[slice]:
    return [slice(i, min(i + max_rows, len(lengths))) for i in range(0, len(lengths), max_rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    labels = list(get_task("sst-2").label_words)
    inputs = [ex.text for ex in load_kshot_dir(args.data)["train"][: args.inputs]]
    model, tokenizer = load_lm(args.target, dtype="float32")
    engine = LocalScorer(model, tokenizer)
    cut_batches = engine_module.padded_batches
    engine.score([PROMPT], inputs[:2], TEMPLATE, labels)  # warm-up

    times: dict[str, list[float]] = {"cut": [], "fixed": []}
    results = {}
    for repeat in range(args.repeats):
        prompts = [f"{PROMPT} {repeat}.{i}" for i in range(args.prompts)]
        for name, batches in (("cut", cut_batches), ("fixed", fixed_batches)):
            engine_module.padded_batches = batches
            engine.cache.store.clear()
            start = time.perf_counter()
            results[name] = engine.score(prompts, inputs, TEMPLATE, labels)
            times[name].append(time.perf_counter() - start)
    engine_module.padded_batches = cut_batches

    diff = (results["cut"] - results["fixed"]).abs().max().item()
    lengths = [
        len(r[0].suffix)
        for r in engine.build_rows([(PROMPT, x) for x in inputs], TEMPLATE, tuple(labels))
    ]
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{args.prompts} prompts x {len(inputs)} inputs, suffix lengths {min(lengths)}-"
        f"{max(lengths)} tokens (mean {statistics.mean(lengths):.1f}), {args.repeats} repeats"
    )
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:6s} median {statistics.median(values):.2f} s  ({each})")
    ratio = statistics.median(times["fixed"]) / statistics.median(times["cut"])
    print(f"cut vs fixed: {ratio:.2f}x faster; max |logprob diff| {diff:.1e}")


if __name__ == "__main__":
    main()
