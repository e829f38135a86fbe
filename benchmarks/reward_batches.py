"""Suffix batches sorted and cut by length vs the earlier fixed-size batches.

    python benchmarks/reward_batches.py                                  # APPO's reward workload
    python benchmarks/reward_batches.py --input-first --prompts 16 --inputs 32 \
        --prompt "All in all, it was"                              # RLPrompt's (5-token prompts)

Workload: `prompts` prompts x `inputs` SST-2 train inputs (split 16-42), label words
` terrible`/` great`, target smollm2-135m in fp32, in StablePrompt's template
`{prompt}\\nInput: {input}\\nOutput:` (there each input sits in the suffix, which runs through every
layer for every prompt) or with `--input-first` in RLPrompt's `{input} {prompt}` (there the input
is the shared prefix and the suffix is the prompt). Timed in one process, alternating:
  - cut: `LocalScorer` as it is (rows sorted by suffix length, a batch ends where padding grows);
  - fixed: the engine as it was before, rows sorted by prefix length then suffix length, one
    batch per 128 rows.
Each repeat scores new prompts; their prefixes are encoded before the clock starts (a run
encodes each once), so only the suffix batches are timed.
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

PROMPT = "Read the movie review below and say whether the reviewer liked the film or not, case"


def fixed_batches(lengths: list[int], max_rows: int) -> list[slice]:
    return [slice(i, min(i + max_rows, len(lengths))) for i in range(0, len(lengths), max_rows)]


def prefix_first(row) -> tuple[int, int]:
    return len(row.prefix), len(row.suffix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--input-first", action="store_true", help="RLPrompt's {input} {prompt}")
    parser.add_argument("--prompt", default=PROMPT, help="each prompt is this + a number")
    args = parser.parse_args()

    task = get_task("sst-2")
    template = task.template if args.input_first else "{prompt}\nInput: {input}\nOutput:"
    labels = list(task.label_words)
    inputs = [ex.text for ex in load_kshot_dir(args.data)["train"][: args.inputs]]
    model, tokenizer = load_lm(args.target, dtype="float32")
    engine = LocalScorer(model, tokenizer)
    variants = {
        "cut": (engine_module.batch_order, engine_module.padded_batches),
        "fixed": (prefix_first, fixed_batches),
    }
    engine.score([args.prompt], inputs[:2], template, labels)  # warm-up

    times: dict[str, list[float]] = {name: [] for name in variants}
    results = {}
    for repeat in range(args.repeats):
        prompts = [f"{args.prompt} {repeat}.{i}" for i in range(args.prompts)]
        pairs = [(p, x) for p in prompts for x in inputs]
        rows = [r for rs in engine.build_rows(pairs, template, tuple(labels)) for r in rs]
        engine._encode_prefixes({r.prefix for r in rows})
        for name, (order, batches) in variants.items():
            engine_module.batch_order, engine_module.padded_batches = order, batches
            engine.cache.store.clear()
            start = time.perf_counter()
            results[name] = engine.score(prompts, inputs, template, labels)
            times[name].append(time.perf_counter() - start)
    engine_module.batch_order, engine_module.padded_batches = variants["cut"]

    diff = (results["cut"] - results["fixed"]).abs().max().item()
    suffixes = [len(r.suffix) for r in rows]
    prefixes = [len(r.prefix) for r in rows]
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{template!r}: {args.prompts} prompts x {len(inputs)} inputs, suffixes "
        f"{min(suffixes)}-{max(suffixes)} tokens (mean {statistics.mean(suffixes):.1f}), prefixes "
        f"{min(prefixes)}-{max(prefixes)} (mean {statistics.mean(prefixes):.1f}), "
        f"{args.repeats} repeats"
    )
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:6s} median {statistics.median(values):.2f} s  ({each})")
    ratio = statistics.median(times["fixed"]) / statistics.median(times["cut"])
    print(f"cut vs fixed: {ratio:.2f}x faster; max |logprob diff| {diff:.1e}")


if __name__ == "__main__":
    main()
