"""Is there anything to choose? Random demonstration sets scored on train, dev and test.

    python benchmarks/set_spread.py --task larger_animal --answer-tokens 8 --sets 40 \
        --out docs/results/set_spread/larger_animal-s0.json

Draws `--sets` random sets of `--demonstrations` solved train pairs, exactly as `train --algo
random --demonstrations K` draws them (same seed, same candidates), and scores every set on
`--train-inputs` rewarding train inputs (the log-likelihood of the gold answer, the reward sql
trains on, and the exact match of the greedy answer), on every dev input and on every test input.

Prints, with the date, machine and git revision:
- the split-half reliability of dev and of test (`split_half_reliability`, what a run prints
  for the prompts it scored on dev): the Pearson r, over the sets, of each set's score on the
  even inputs with its score on the odd ones, stepped up to the whole split (Spearman-Brown,
  2r / (1 + r)), floored at 0. Near 0: the sets' scores differ by the inputs' noise alone, and
  no optimiser can choose among them on that split.
- the Spearman rank correlation of each train signal (on the first 8 inputs, what an sql step
  scores, and on all `--train-inputs`) and of dev with dev and with test;
- the test score of the set each signal ranks first, against the sets' mean and best test score;
- what a screen on train buys at the same calls (`at_equal_calls`): the mean test score of the
  dev-best of 5 random sets, against 20 random sets ranked by the log-likelihood on 8 train
  inputs (160 calls) with the best of them that the remaining calls pay for scored on dev.

No method chooses on test here: test only reports how much the sets truly differ. `--out` keeps
every score (JSON), and `--summarize F [F ...]` prints the summaries of files written before.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import time
from pathlib import Path

import torch
from scoring import machine, pearson, revision

from stableprompt.algorithms.baselines import FixedPrompts
from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.selection import split_half_reliability, split_halves

TRAIN_STEP = 8  # train inputs an sql step scores a set on (--train-examples 8 in RESULTS' runs)
PICKS, SCREENED, TRIALS = 5, 20, 4000  # `at_equal_calls`


def ranks(x: torch.Tensor) -> torch.Tensor:
    """0-based ranks, ties sharing the mean of their positions (as Spearman's r takes them)."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    return (counts.cumsum(0) - (counts + 1) / 2)[inverse].float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(ranks(a), ranks(b))


def at_equal_calls(
    screen: torch.Tensor, dev: torch.Tensor, test: torch.Tensor, dev_inputs: int
) -> tuple[float, float, int]:
    """Mean test score of the set chosen two ways for the same target calls, over `TRIALS`
    random draws from the sets: dev scores `PICKS` random sets and keeps the best (what `--algo
    random` does), or `screen` (8 calls a set) ranks `SCREENED` random sets and dev scores the
    best of them that the calls left pay for, keeping the best on dev. Returns both means and
    how many sets the screened way scored on dev."""
    kept = PICKS - math.ceil(TRAIN_STEP * SCREENED / dev_inputs)
    generator = torch.Generator().manual_seed(0)
    plain, screened = [], []
    for _ in range(TRIALS):
        drawn = torch.randperm(len(dev), generator=generator)
        picked = drawn[:PICKS]
        plain.append(test[picked[dev[picked].argmax()]])
        ranked = drawn[:SCREENED]
        top = ranked[screen[ranked].topk(kept).indices]
        screened.append(test[top[dev[top].argmax()]])
    return torch.stack(plain).mean().item(), torch.stack(screened).mean().item(), kept


def summarize(data: dict) -> str:
    t = {k: torch.tensor(v) for k, v in data["scores"].items()}
    dev, test = t["dev"].mean(1), t["test"].mean(1)
    signals = {
        f"LL {TRAIN_STEP} train": t["train_loglikelihood"][:, :TRAIN_STEP].mean(1),
        f"LL {t['train_loglikelihood'].shape[1]} train": t["train_loglikelihood"].mean(1),
        f"EM {TRAIN_STEP} train": t["train_exact_match"][:, :TRAIN_STEP].mean(1),
        f"EM {t['train_exact_match'].shape[1]} train": t["train_exact_match"].mean(1),
        "dev EM": dev,
    }
    lines = [
        f"{data['task']} seed {data['seed']}: {len(dev)} sets of {data['demonstrations']} pairs; "
        f"dev {t['dev'].shape[1]} inputs, test {t['test'].shape[1]} "
        f"({data['date']}, rev {data['revision']}, {data['machine']}, {data['seconds']:.0f} s)",
        f"dev  mean {dev.mean():.3f} sd {dev.std():.3f} split-half reliability "
        f"{split_half_reliability(split_halves(t['dev'])):.2f}",
        f"test mean {test.mean():.3f} sd {test.std():.3f} split-half reliability "
        f"{split_half_reliability(split_halves(t['test'])):.2f}; best set {test.max():.2f}",
        f"{'signal':<13} {'rank r dev':>10} {'rank r test':>11} {'test of its top set':>20}",
    ]
    for name, x in signals.items():
        lines.append(
            f"{name:<13} {spearman(x, dev):>+10.2f} {spearman(x, test):>+11.2f} "
            f"{test[int(x.argmax())]:>20.2f}"
        )
    plain, screened, kept = at_equal_calls(
        signals[f"LL {TRAIN_STEP} train"], dev, test, t["dev"].shape[1]
    )
    lines.append(
        f"same calls, mean test over {TRIALS} draws: dev-best of {PICKS} random sets {plain:.3f}; "
        f"{SCREENED} sets ranked by LL {TRAIN_STEP} train, dev-best of the top {kept} "
        f"{screened:.3f}; one random set {test.mean():.3f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="larger_animal")
    parser.add_argument("--data", default=None, help="default ii:<task>")
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--answer-tokens", type=int, default=None)
    parser.add_argument("--demonstrations", type=int, default=5)
    parser.add_argument("--sets", type=int, default=40)
    parser.add_argument("--train-inputs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every score")
    parser.add_argument("--summarize", type=Path, nargs="+", help="print files saved before")
    args = parser.parse_args()
    if args.summarize:
        print("\n\n".join(summarize(json.loads(path.read_text())) for path in args.summarize))
        return
    values = {
        "algo": "random",
        "task": args.task,
        "data": args.data or f"ii:{args.task}",
        "target": args.target,
        "agent": args.target,
        "dtype": args.dtype,
        "seed": args.seed,
        "demonstrations": args.demonstrations,
        "prompts_per_step": args.sets,
        "generation_reward": "loglikelihood",
    }
    if args.answer_tokens:
        values["answer_tokens"] = args.answer_tokens
    config = TrainConfig.from_dict(values)
    ctx = build_context(config)
    prompts = FixedPrompts(config, ctx).prompts  # the sets `--algo random` draws first
    train = list(ctx.splits["train"])
    random.Random(args.seed).shuffle(train)
    train = train[: args.train_inputs]
    start = time.perf_counter()
    scores = {
        "train_loglikelihood": ctx.answer_logprobs(prompts, train),
        "train_exact_match": ctx.generation_scores(prompts, train),
        "dev": ctx.example_scores(prompts, "dev"),
        "test": ctx.example_scores(prompts, "test"),
    }
    data = {
        "task": args.task,
        "seed": args.seed,
        "demonstrations": args.demonstrations,
        "date": str(datetime.date.today()),
        "revision": revision(),
        "machine": machine(),
        "seconds": time.perf_counter() - start,
        "prompts": prompts,
        "scores": {k: v.tolist() for k, v in scores.items()},
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data))
    print(summarize(data))


if __name__ == "__main__":
    main()
