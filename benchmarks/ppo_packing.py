"""PPO update with the rollout's rows packed into one sequence vs padded to the longest row.

    python benchmarks/ppo_packing.py --rollouts 6 --repeats 3

Real APPO rollouts of the untrained SmolLM2-135M-Instruct agent (SST-2 16-42 meta-prompts, 4
prompts of up to 32 tokens each); on each, one PPO epoch (forward, clipped loss, backward,
AdamW step) timed padded and packed, alternately in one process, and the largest difference of
the log-probs the two forwards give. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import statistics

import torch
from roofline import appo_agent, ppo_epoch_seconds
from scoring import machine, revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rollouts", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per rollout and side")
    args = parser.parse_args()
    torch.manual_seed(0)
    algo = appo_agent(args.model)
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print("| rollout | prompt lengths | rows padded | rows packed | padded s | packed s | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    padded_all, packed_all, diffs = [], [], []
    for i in range(args.rollouts):
        query, samples, _ = algo.rollout()
        mask = samples.mask
        with torch.no_grad():
            plain, _ = algo.agent.forward_logprobs_values(query, samples.response)
            packed, _ = algo.agent.forward_logprobs_values(query, samples.response, mask=mask)
        diffs.append(((plain - packed).abs() * mask).max().item())
        padded_s = ppo_epoch_seconds(algo, query, samples, args.repeats, packed=False)
        packed_s = ppo_epoch_seconds(algo, query, samples, args.repeats, packed=True)
        padded_all.append(padded_s)
        packed_all.append(packed_s)
        lengths = mask.sum(1).tolist()
        print(
            f"| {i + 1} | {', '.join(map(str, lengths))} | {mask.numel()} | {sum(lengths)} "
            f"| {padded_s:.2f} | {packed_s:.2f} | {padded_s / packed_s:.2f}x |"
        )
    padded_mean, packed_mean = statistics.mean(padded_all), statistics.mean(packed_all)
    ratios = [a / b for a, b in zip(padded_all, packed_all, strict=True)]
    print(
        f"\nPPO epoch, mean over {args.rollouts} rollouts: padded {padded_mean:.2f} s, packed "
        f"{packed_mean:.2f} s ({padded_mean / packed_mean:.2f}x; median ratio "
        f"{statistics.median(ratios):.2f}x); largest log-prob difference {max(diffs):.1e}"
    )


if __name__ == "__main__":
    main()
