"""How well does a train reward predict dev accuracy? Prompts sampled from an untrained policy.

    python benchmarks/reward_correlation.py [--data <an SST-2 k-shot dir with train and dev>]

Samples `--batches` x 16 prompts from the untrained sparse-sql (PIN) policy (label words `auto`),
scores each on every train and dev sentence, and prints, for RLPrompt's reward and the
worst-class reward on train: the Pearson correlation with balanced dev accuracy over the prompts,
and the mean dev accuracy of the 5 prompts each reward ranks highest; plus the mean and best dev
accuracy of all the prompts. Scores no test sentence.
"""

from __future__ import annotations

import argparse
import datetime
import random

import torch
from scoring import ROOT, machine, pearson, revision

from stableprompt.algorithms.sparse_sql import SparseSoftQLearning
from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.tasks.rewards import rlprompt_reward, worst_class_reward
from stableprompt.tasks.verbalizers import balanced_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-87"))
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    config = TrainConfig(algo="sparse-sql", task="sst-2", data=args.data, dtype="float32")
    ctx = build_context(config)
    torch.manual_seed(0)
    random.seed(0)
    policy = SparseSoftQLearning(config, ctx)
    prompts = []
    for _ in range(args.batches):
        prompts += policy.policy.decode(policy.policy.rollout(16, policy.choose).actions)
    prompts = list(dict.fromkeys(prompts))
    train, dev = ctx.splits["train"], ctx.splits["dev"]
    y_train = torch.tensor([ex.label for ex in train])
    y_dev = torch.tensor([ex.label for ex in dev])
    dev_pred = ctx.logprobs(prompts, dev).argmax(-1)
    dev_acc = torch.tensor([balanced_accuracy(row, y_dev, 2) for row in dev_pred])
    logprobs = ctx.logprobs(prompts, train)
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{len(prompts)} distinct prompts, label words {[w.strip() for w in ctx.label_words]}: "
        f"balanced dev accuracy mean {dev_acc.mean():.3f}, best {dev_acc.max():.3f}"
    )
    for name, reward in (
        ("rlprompt", rlprompt_reward(logprobs, y_train)),
        ("worst-class", worst_class_reward(logprobs, y_train)),
    ):
        top = reward.topk(5).indices
        print(
            f"{name:<12} Pearson r with dev accuracy {pearson(reward, dev_acc):+.3f}; "
            f"dev accuracy of its top 5 prompts {dev_acc[top].mean():.3f}"
        )


if __name__ == "__main__":
    main()
