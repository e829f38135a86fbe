"""How much could choosing demonstration sets gain, and can train or dev tell the good ones?

    python benchmarks/demo_headroom.py [--task trec --split 16-42 --k 6 --sets 30]

Draws `--sets` balanced sets of K train examples uniformly, as the random baseline and the
untrained policy do under `--demonstrations-from all`, and scores each on the train examples it
does not show (what a sql step rewards, there on 16 of them), on dev and on test, with the
label words given (default: those `auto` chose for TREC 16-42's claims runs). Prints the spread
of test accuracy over the sets (the room any policy has), the Pearson correlation of train and
dev accuracy with test accuracy, and the test accuracy of the set each of train, dev, and train
and dev pooled would choose; then, over random subsets of m of the sets (a search that scored m),
the mean and sd of the chosen set's test accuracy. Writes every set's scores to `--out`. This
reads test to measure the room; no method chooses on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
from reward_correlation import pearson
from scoring import ROOT, machine, revision

from stableprompt.algorithms.baselines import random_demonstration_sets
from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.tasks.demonstrations import unshown, use_demonstrations

TREC_WORDS = "Definition,Object,abbreviation,Person,location,number"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec")
    parser.add_argument("--split", default="16-42")
    parser.add_argument("--k", type=int, default=6, help="demonstrations per set")
    parser.add_argument("--sets", type=int, default=30)
    parser.add_argument("--label-words", default=TREC_WORDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="a JSON file for every set's scores")
    args = parser.parse_args()
    data = ROOT.parent / f"shared/data/fsc/16-shot/{args.task}/{args.split}"
    config = TrainConfig(
        algo="random",
        task=args.task,
        data=str(data),
        label_words=args.label_words,
        demonstrations=args.k,
        demonstrations_from="all",
        dtype="float32",
    )
    ctx = build_context(config)
    texts, classes = use_demonstrations(ctx, args.k, True, "all")
    sets = random_demonstration_sets(len(texts), args.sets, args.k, args.seed, classes)
    prompts = ["".join(texts[i] for i in picked) for picked in sets]
    train = ctx.splits["train"]
    keep = unshown(torch.tensor(sets), train, train).float()
    correct = ctx.example_scores(prompts, "train")
    train_hits, train_n = (correct * keep).sum(1), keep.sum(1)
    dev_scores = ctx.example_scores(prompts, "dev")
    dev = dev_scores.mean(1)
    test = ctx.example_scores(prompts, "test").mean(1)
    manual = ctx.example_scores([""], "test").mean().item()  # the manual prompt, nothing shown
    pooled = (train_hits + dev_scores.sum(1)) / (train_n + dev_scores.shape[1])

    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{args.task} {args.split}: {len(prompts)} balanced sets of {args.k} from {len(texts)} "
        f"train examples; label words {args.label_words}; manual prompt on test {manual:.3f}"
    )
    print(
        f"test accuracy over the sets: mean {test.mean():.3f}, sd {test.std():.3f}, "
        f"min {test.min():.3f}, max {test.max():.3f}"
    )
    print(f"dev ({dev_scores.shape[1]} examples): mean {dev.mean():.3f}, sd {dev.std():.3f}")
    criteria = {
        f"train (~{train_n.mean():.0f} unshown)": train_hits / train_n,
        "dev": dev,
        "train + dev": pooled,
    }
    for name, score in criteria.items():
        top = score.topk(min(5, len(score))).indices
        print(
            f"chosen on {name:<22} Pearson r with test {pearson(score, test):+.3f}; test of "
            f"its best set {test[top[0]]:.3f}, of its top 5 {test[top].mean():.3f}"
        )
    generator = torch.Generator().manual_seed(args.seed)
    for m in (8, 16, 32):
        if m >= len(prompts):
            continue
        draws = torch.stack(
            [torch.randperm(len(prompts), generator=generator)[:m] for _ in range(2000)]
        )
        chosen = {"test (oracle)": test, **criteria}
        parts = []
        for name, score in chosen.items():
            picked = test[draws.gather(1, score[draws].argmax(1, keepdim=True))]
            parts.append(f"{name.split(' (~')[0]} {picked.mean():.3f} ± {picked.std():.3f}")
        print(f"best of {m} sets by " + "; ".join(parts))
    if args.out:
        rows = zip(sets, (train_hits / train_n).tolist(), dev.tolist(), test.tolist(), strict=True)
        record = {"task": args.task, "split": args.split, "k": args.k, "manual_test": manual}
        record["sets"] = [dict(set=s, train=a, dev=b, test=c) for s, a, b, c in rows]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
