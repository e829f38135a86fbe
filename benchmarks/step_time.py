"""Seconds per training step of each algorithm on SST-2 with smollm2-135m as agent and target.

    python benchmarks/step_time.py --algo sql --steps 6
    python benchmarks/step_time.py --algo appo --prompts-per-step 4 --train-examples 16
    python benchmarks/step_time.py --algo appo --train-examples 16 --max-new-tokens 32

The first step is a warm-up (it also encodes every train input once) and is not counted. Prints
the mean and range of the other steps with the date, machine and git revision.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
from pathlib import Path

from scoring import ROOT, machine, revision

from stableprompt.trainer import TrainConfig, Trainer, build_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="sql")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts-per-step", type=int, default=None)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="appo/ppo prompt length cap")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            algo=args.algo,
            task="sst-2",
            data=args.data,
            agent=args.model,
            target=args.model,
            steps=args.steps,
            eval_every=10**9,
            save_every=10**9,
            prompts_per_step=args.prompts_per_step,
            train_examples=args.train_examples,
            max_new_tokens=args.max_new_tokens,
            pool_size=1,  # the final test scoring is not timed; keep it short
            out=out,
        )
        ctx = build_context(config)
        Trainer(config, ctx, progress=False).train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    times = [r["seconds"] for r in records if r["step"] >= 1]
    per_step = [b - a for a, b in zip(times, times[1:])]
    n_train = args.train_examples or len(ctx.splits["train"])
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{args.algo}: {args.prompts_per_step or 'default'} prompts x {n_train} examples per step, "
        f"{len(per_step)} timed steps: mean {statistics.mean(per_step):.2f} s/step "
        f"(min {min(per_step):.2f}, max {max(per_step):.2f}); first step {times[0]:.2f} s"
    )
    parts = ("seconds_rollout", "seconds_reward", "seconds_update")  # appo/ppo report these
    timed = [r for r in records if r["step"] >= 2 and parts[0] in r]
    if timed:
        means = {p: statistics.mean(r[p] for r in timed) for p in parts}
        length = statistics.mean(r["response_len"] for r in timed)
        print(
            "  of which "
            + ", ".join(f"{p[8:]} {v:.2f} s" for p, v in means.items())
            + f"; mean prompt length {length:.1f} tokens"
        )


if __name__ == "__main__":
    main()
