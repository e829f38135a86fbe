"""Seconds per training step of each algorithm, smollm2-135m as agent and target; SST-2 or --task.

    python benchmarks/step_time.py --algo sql --steps 6
    python benchmarks/step_time.py --algo appo --prompts-per-step 4 --train-examples 16
    python benchmarks/step_time.py --algo appo --train-examples 16 --max-new-tokens 32
    python benchmarks/step_time.py --algo sql --train-examples 16 --dtypes float32,int8
    python benchmarks/step_time.py --algo ppo --task sentiment --data ii:sentiment \
        --prompts-per-step 4 --train-examples 16 --answer-tokens 32,4
    python benchmarks/step_time.py --algo ppo --task larger_animal --data ii:larger_animal \
        --prompts-per-step 4 --train-examples 16 --answer-tokens 8 --max-new-tokens 32 \
        --generation-reward loglikelihood --target-shots 5 --prefix repeats,first

The first step is a warm-up (it also encodes every train input once) and is not counted. Prints
the mean and range of the other steps with the date, machine (CPU flags) and git revision, where
each step's time went (sampling the prompts, the target's reward, the update), the ratio of each
setting's mean to the first's (dtypes x answer lengths, all measured in one process), whether
its train rewards equal the first setting's step for step, and the peak RSS. `--prefix first`
times the scoring engine as it was until 2026-12-07 (only the first placeholder in the
shared prefix), so a template that repeats the prompt (`--target-shots`) is compared in one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import statistics
import tempfile
from pathlib import Path
from unittest import mock

from scoring import ROOT, machine, revision

from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.models import scoring
from stableprompt.tasks.registry import fill_template
from stableprompt.trainer import Trainer


def split_at_first_placeholder(template: str, prompt: str, text: str) -> tuple[str, str]:
    """The engine's split until 2026-12-07: after the first placeholder alone."""
    first = min(("{prompt}", "{input}"), key=template.find)
    cut = template.find(first) + len(first)
    return fill_template(template[:cut], prompt, text), fill_template(template[cut:], prompt, text)


SPLITS = {"repeats": scoring.split_template, "first": split_at_first_placeholder}


def timed_run(args: argparse.Namespace, dtype: str, answer_tokens: int | None, prefix: str) -> dict:
    """Train args.steps steps in `dtype`; the per-step seconds and the logged breakdown."""
    split = mock.patch.object(scoring, "split_template", SPLITS[prefix])
    with tempfile.TemporaryDirectory() as out, split:
        config = TrainConfig(
            algo=args.algo,
            task=args.task,
            data=args.data,
            agent=args.model,
            target=args.model,
            dtype=dtype,
            label_words=args.label_words,
            steps=args.steps,
            eval_every=10**9,
            save_every=10**9,
            prompts_per_step=args.prompts_per_step,
            train_examples=args.train_examples,
            max_new_tokens=args.max_new_tokens,
            answer_tokens=answer_tokens,
            generation_reward=args.generation_reward,
            target_shots=args.target_shots,
            pool_size=1,  # the final test scoring is not timed; keep it short
            score_manual=False,
            out=out,
        )
        ctx = build_context(config)
        trainer = Trainer(config, ctx, progress=False)
        trainer.train()
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    times = [r["seconds"] for r in records if r["step"] >= 1]
    parts = ("seconds_rollout", "seconds_reward", "seconds_update")  # logged by every algorithm
    timed = [r for r in records if r["step"] >= 2 and parts[0] in r]
    return {
        "per_step": [b - a for a, b in zip(times, times[1:])],
        "rewards": [r["reward_mean"] for r in records if "reward_mean" in r],
        "first": times[0],
        "parts": {p[8:]: statistics.mean(r[p] for r in timed) for p in parts} if timed else {},
        "prompt_tokens": statistics.mean(r["response_len"] for r in timed)
        if timed and "response_len" in timed[0]
        else None,
        "n_train": trainer.algorithm.examples_per_step(),
        "answer_tokens": getattr(ctx, "max_new_tokens", None),  # the cap resolved
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="sql")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts-per-step", type=int, default=None)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="appo/ppo prompt length cap")
    parser.add_argument(
        "--dtypes",
        default="float32",
        help="comma-separated; each runs in turn, ratios vs the first",
    )
    parser.add_argument("--label-words", default="task", help="task (fixed cost) or auto")
    parser.add_argument("--task", default="sst-2")
    parser.add_argument("--generation-reward", default="metric", help="generation tasks' reward")
    parser.add_argument(
        "--answer-tokens",
        default="32",
        help="generation tasks: comma-separated answer caps; auto: the library's default",
    )
    parser.add_argument("--target-shots", type=int, default=0, help="solved pairs in the template")
    parser.add_argument(
        "--prefix",
        default="repeats",
        help="comma-separated shared-prefix rules: repeats (the engine's) or first (its old one)",
    )
    args = parser.parse_args()

    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    caps = [None if a == "auto" else int(a) for a in args.answer_tokens.split(",")]
    settings = [
        (d, a, p) for d in args.dtypes.split(",") for a in caps for p in args.prefix.split(",")
    ]
    results = {setting: timed_run(args, *setting) for setting in settings}
    first = next(iter(results.values()))
    base = statistics.mean(first["per_step"])
    for (dtype, answer_tokens, prefix), r in results.items():
        mean = statistics.mean(r["per_step"])
        same = "the same as" if r["rewards"] == first["rewards"] else "different from"
        print(
            f"{args.algo} {dtype}, answers <= {r['answer_tokens']} tokens"
            f"{' (auto)' if answer_tokens is None else ''}, prefix {prefix}: "
            f"{args.prompts_per_step or 'default'} prompts x {r['n_train']} "
            f"examples per step, {len(r['per_step'])} timed steps: mean {mean:.2f} s/step "
            f"(min {min(r['per_step']):.2f}, max {max(r['per_step']):.2f}; {base / mean:.2f}x "
            f"the first setting's speed); first step {r['first']:.2f} s; train rewards {same} "
            f"the first setting's; peak RSS so far {r['peak_rss_gb']:.2f} GB"
        )
        if r["parts"]:
            length = r["prompt_tokens"]
            print(
                "  of which "
                + ", ".join(f"{p} {v:.2f} s" for p, v in r["parts"].items())
                + (f"; mean prompt length {length:.1f} tokens" if length else "")
            )


if __name__ == "__main__":
    main()
