"""Would a check on the target's label-word probabilities return more of the gains that the
0/1 check turns down, without returning worse prompts?

    python benchmarks/check_power.py [--tasks agnews,sst-5,sst-2,trec] [--held-out 250]

At the end of a run the pool's best prompt is returned only if it beats the manual prompt on
dev by a one-sided sign test on the examples where one is right and the other wrong
(selection.py). On a 16-shot dev those are few (10-30), so real gains of a few points are
turned down. The target's label-word log-probs carry more: on every example, how far the gold
word is ahead of the best other word (the margin) and its probability among the label words
(p(gold)). For each finished C1 claims run that chose on its split's own dev, this script
scores the pool's best and the manual prompt on that dev and on `--held-out` labelled examples
drawn from the task's other RLPrompt splits' train and dev (`claims.wide_dev_data` minus the
split's own dev: none from test, none of the split's train), then compares rules on the dev
(the 0/1 sign test, a sign test on the margins, paired randomisation tests on the margins and
on p(gold)) by what each would return, scored on the held-out examples. Nothing is retrained;
each run's scores are cached in `--out`, so a stopped run continues and a rerun only prints.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
from pathlib import Path

import claims
import torch
from scoring import ROOT, machine, revision

from stableprompt.rundir import atomic_write_text
from stableprompt.selection import against_manual
from stableprompt.tasks import load_kshot_dir
from stableprompt.tasks.metrics import sign_test
from stableprompt.tasks.rewards import gold_gap, label_probs

THRESHOLD = 0.1  # the library's --replace-manual-p


def p_gold(logprobs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[examples] the gold word's probability among the label words."""
    return label_probs(logprobs).gather(1, labels[:, None])[:, 0]


def measure(r: dict, scorers: dict, held_out: int) -> dict:
    """One run's two prompts on its own dev and on the held-out sample: the 0/1 and margin sign
    tests on the dev, the accuracy gain held out, and the per-example scores for other rules."""
    ctx, summary = claims._wide_dev_context(r["run_dir"], r["task"], r["split"], scorers)
    n_own = len(load_kshot_dir(claims.DATA / r["task"] / r["split"])["dev"])
    dev = ctx.splits["dev"]
    # a fixed sample of the held-out examples: scoring all ~500-800 of a task costs minutes a run
    rest = random.Random(0).sample(dev[n_own:], min(held_out, len(dev) - n_own))
    examples = dev[:n_own] + rest
    labels = torch.tensor([ex.label for ex in examples])
    learned, manual = summary["prompts"][0], summary["manual"]
    lp_learned = ctx.logprobs([learned["prompt"]], examples, learned.get("label_words"))[0]
    lp_manual = ctx.logprobs([manual["prompt"]], examples, summary["label_words"] or None)[0]
    right_l = (lp_learned.argmax(-1) == labels).float()
    right_m = (lp_manual.argmax(-1) == labels).float()
    margin_l, margin_m = gold_gap(lp_learned, labels), gold_gap(lp_manual, labels)
    gap = margin_l - margin_m
    own, held = slice(0, n_own), slice(n_own, None)
    check01 = against_manual(right_l[own], right_m[own])
    ahead, behind = int((gap[own] > 0).sum()), int((gap[own] < 0).sum())
    return {
        "own_dev": n_own,
        "held_out": len(examples) - n_own,
        "check_01": check01,
        "check_margin": {"wins": ahead, "losses": behind, "p": sign_test(ahead, behind)},
        "held_gain": (right_l[held].mean() - right_m[held].mean()).item(),
        "stored_p": (r.get("check") or {}).get("p"),  # the run's own check, for a consistency test
        # per example, own dev first: both prompts' margins (correct where > 0), for other rules
        "margin_learned": [round(x, 4) for x in margin_l.tolist()],
        "margin_manual": [round(x, 4) for x in margin_m.tolist()],
        # and p(gold word) normalised over the label words: each example's expected accuracy
        "p_gold_learned": [round(x, 4) for x in p_gold(lp_learned, labels).tolist()],
        "p_gold_manual": [round(x, 4) for x in p_gold(lp_manual, labels).tolist()],
    }


def runs(results: list[dict], tasks: list[str]) -> list[dict]:
    """C1 classification runs that chose on their split's own dev and ran the check, seed 0
    (one per setting and split; a later seed repeats a setting)."""
    chosen = []
    for task in tasks:
        for r in results:
            if (r["task"], r["claim"], r["seed"], r["sentences"]) != (task, "c1", 0, ""):
                continue
            if not r.get("check"):
                continue
            config = Path(r["run_dir"], "config.yaml").read_text()
            if "select_on: dev+train" in config:  # its check also reads train
                continue
            chosen.append(r)
    return chosen


def sign_flip_p(diffs: torch.Tensor, draws: int = 20_000, seed: int = 0) -> float:
    """One-sided paired randomisation test: the chance that flipping the sign of each paired
    difference at random gives a mean at least the observed one (no better prompt)."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (draws, len(diffs)), generator=generator).double() * 2 - 1
    flipped = (signs * diffs.double()).mean(1)
    return (1 + int((flipped >= diffs.double().mean() - 1e-12).sum())) / (draws + 1)


def own_diffs(m: dict, key: str) -> torch.Tensor:
    """Learned minus manual per example of the split's own dev, for `key` (margin or p_gold)."""
    own = m["own_dev"]
    return torch.tensor(m[f"{key}_learned"][:own]) - torch.tensor(m[f"{key}_manual"][:own])


RULES = {
    "0/1 sign test (the library's)": lambda m: m["check_01"]["p"],
    "margin sign test": lambda m: m["check_margin"]["p"],
    "margin randomisation test": lambda m: sign_flip_p(own_diffs(m, "margin")),
    "p(gold) randomisation test": lambda m: sign_flip_p(own_diffs(m, "p_gold")),
}


def summarise(rows: list[tuple[dict, dict]]) -> str:
    """What each rule returns at p < 0.1, scored on the held-out examples (its gain over the
    manual prompt there, 0 where it returns the manual prompt)."""
    lines = [
        "| rule (p < 0.1) | learned returned | held-out gain of what is returned: mean | worst | "
        "learned returned but worse held out | learned better held out but not returned |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rule in [*RULES.items(), ("always the pool's best (no check)", lambda m: 0.0)]:
        kept = [rule(m) < THRESHOLD for _, m in rows]
        gains = [m["held_gain"] if k else 0.0 for k, (_, m) in zip(kept, rows)]
        worse = sum(k and m["held_gain"] < 0 for k, (_, m) in zip(kept, rows))
        missed = sum(not k and m["held_gain"] > 0 for k, (_, m) in zip(kept, rows))
        lines.append(
            f"| {name} | {sum(kept)} of {len(rows)} | {statistics.mean(gains) * 100:+.2f} points "
            f"| {min(gains) * 100:+.1f} | {worse} | {missed} |"
        )
    return "\n".join(lines)


def dumps(cache: dict) -> str:
    """One run per line: the per-example lists make an indented file ~3x larger."""
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in cache.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="agnews,sst-5,sst-2,trec")
    parser.add_argument("--claims", default="docs/results/claims/claims.json")
    parser.add_argument("--out", default="docs/results/check_power.json")
    parser.add_argument("--held-out", type=int, default=250, help="held-out examples per run")
    args = parser.parse_args()
    os.chdir(ROOT)
    results = json.loads(Path(args.claims).read_text())
    out = Path(args.out)
    cache = json.loads(out.read_text()) if out.is_file() else {}
    scorers: dict = {}
    todo = runs(results, args.tasks.split(","))
    for i, r in enumerate(todo):
        if r["run_dir"] not in cache:
            m = cache[r["run_dir"]] = measure(r, scorers, args.held_out)
            atomic_write_text(out, dumps(cache))
            print(
                f"{i + 1}/{len(todo)} {r['run_dir']}: p 0/1 {m['check_01']['p']:.3f}, margin "
                f"{m['check_margin']['p']:.3f}; held-out gain {m['held_gain']:+.3f}",
                flush=True,
            )
    rows = [(r, cache[r["run_dir"]]) for r in todo]
    kinds = {
        "demonstrations": [x for x in rows if "demos" in x[0]["variant"]],
        "no demonstrations (token prompts, best-of-N instructions)": [
            x for x in rows if "demos" not in x[0]["variant"]
        ],
        "all": rows,
    }
    stamp = datetime.date.today().isoformat()
    print(f"\n{stamp}, revision {revision()}, {machine()}")
    same = sum(abs(m["check_01"]["p"] - r["check"]["p"]) < 1e-9 for r, m in rows)
    print(f"the 0/1 check recomputed here gives the run's own p in {same} of {len(rows)} runs")
    for kind, group in kinds.items():
        if group:
            print(
                f"\n{kind} ({len(group)} runs, {', '.join(sorted({r['task'] for r, _ in group}))})"
            )
            print(summarise(group))


if __name__ == "__main__":
    main()
