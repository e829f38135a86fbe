"""Seconds to decode a generation task's answers: the scorer's greedy decoding over a shared
prefix against transformers' `generate` on whole texts, measured in one process.

    python benchmarks/generation.py --task larger_animal --data ii:larger_animal \
        --shots 0,5 --answer-tokens 8 --inputs 96

For each number of solved train pairs shown before the input (`--shots`; 0 is the instruction
alone, 5 what `in-context`, `--target-shots 5` and `--demonstrations 5` show), the manual
prompt's greedy answers to the first `--inputs` dev inputs are decoded both ways from empty caches,
`--repeats` times each, alternating. Prints the seconds (best and mean), their ratio, how many
answers agree and each way's exact match, with the date, machine (CPU flags) and git revision.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from unittest import mock

from scoring import machine, revision

from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.models.scoring import LocalScorer, ScoreCache, greedy_generate
from stableprompt.tasks.demonstrations import show_solved_pairs


def transformers_generate(self, texts, max_new_tokens, stop):
    """The scorer's decoding until 2026-12-07: `generate` on whole texts, 16 at a time."""
    return greedy_generate(self.model, self.tokenizer, texts, max_new_tokens, stop)


WAYS = {"shared prefix": LocalScorer._generate, "transformers generate": transformers_generate}


def decode(ctx, pairs, way: str) -> tuple[list[str], list[float], float]:
    """The answers, their scores and the seconds, from empty caches."""
    ctx.scorer.gen_cache = ScoreCache()
    ctx.scorer.prefix_store.clear()
    with mock.patch.object(LocalScorer, "_generate", WAYS[way]):
        start = time.perf_counter()
        answers, scores = ctx.answers(pairs)
        return answers, scores.tolist(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="larger_animal")
    parser.add_argument("--data", default="ii:larger_animal")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--shots", default="0,5", help="solved pairs shown, comma-separated")
    parser.add_argument("--answer-tokens", type=int, default=None)
    parser.add_argument("--inputs", type=int, default=96, help="dev inputs decoded")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="draws the solved pairs")
    args = parser.parse_args()

    print(f"# {datetime.date.today()}, revision {revision()}")
    print(f"# machine: {machine()}")
    print(f"# {args.model} ({args.dtype}), {args.task}: the first {args.inputs} dev inputs")
    print("| pairs shown | way | seconds (best) | mean | agree | exact match | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for shots in map(int, args.shots.split(",")):
        config = TrainConfig(
            algo="manual",
            task=args.task,
            data=args.data,
            agent=args.model,
            target=args.model,
            dtype=args.dtype,
            answer_tokens=args.answer_tokens,
            seed=args.seed,
        )
        ctx = build_context(config)
        if shots:
            show_solved_pairs(ctx, shots, args.seed)
        pairs = [(ctx.task.manual_prompt, ex) for ex in ctx.splits["dev"][: args.inputs]]
        decode(ctx, pairs[:16], "shared prefix")  # warm-up: first calls allocate
        seconds: dict[str, list[float]] = {way: [] for way in WAYS}
        results = {}
        for _ in range(args.repeats):
            for way in WAYS:
                answers, scores, took = decode(ctx, pairs, way)
                seconds[way].append(took)
                results[way] = (answers, scores)
        reference = results["transformers generate"][0]
        slowest = min(seconds["transformers generate"])
        for way in WAYS:
            answers, scores = results[way]
            agree = sum(a == b for a, b in zip(answers, reference, strict=True))
            print(
                f"| {shots} | {way} | {min(seconds[way]):.2f} | "
                f"{statistics.mean(seconds[way]):.2f} | {agree}/{len(pairs)} | "
                f"{statistics.mean(scores):.3f} | {slowest / min(seconds[way]):.2f}x |"
            )


if __name__ == "__main__":
    main()
