"""A held-out split larger than test: the train examples a run never read.

    python benchmarks/wide_test.py docs/results/ii-tasks/*/random-demos{5,20}-s[01] \
        --examples 1000 --out docs/results/wide_test/ii.json \
        --compare random-demos20:random-demos5 --compare random-demos5:manual

The instruction-induction test sets hold 100 inputs, so gaps of 2-5 points between methods sit
inside their interval. A run that trains nothing and chooses on dev alone (`--algo random`,
`in-context` or `best-of-n` with `--select-on dev`) reads no train answer except those its
prompts show, so every other train example is as unseen as test. For each run this scores the
prompt it returned (`--pool`: its whole pool) and the manual prompt on a seeded sample of
`--examples` train inputs of the run's seed, each prompt leaving out the pairs it shows, and
compares prompts pairwise on the inputs neither shows (sign test, as `train`'s check does).
A `random` run with `--select-on dev+train` chose on the half of train its prompts may not
show (`--demonstrations-from half`): only the other half's inputs count for it. Other runs
that trained, or chose on train, are refused: their train split is not held out. Only
prompts in the demonstrations form are scored (the manual prompt then is the empty prompt).

`--out` keeps every score per input and is rewritten after each prompt, so a rerun skips what
is scored; the report covers every prompt in the file (`--report` prints it, scoring nothing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import time
from pathlib import Path

import torch
from scoring import machine, pearson, revision

from stableprompt.config import TrainConfig, read_yaml_mapping
from stableprompt.contexts import build_context
from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.rundir import atomic_write_text
from stableprompt.selection import against_manual
from stableprompt.tasks.demonstrations import (
    count_pairs,
    shows,
    split_for_demonstrations,
    use_demonstrations,
)
from stableprompt.tasks.metrics import sign_test
from stableprompt.transfer import SETTINGS, read_run

UNTRAINED = ("random", "in-context", "best-of-n")  # algorithms that read no train answers


def read_unread_run(run_dir: str) -> dict:
    """A finished run whose train split is held out: its settings, its prompts by label."""
    run = read_run(run_dir)
    config = read_yaml_mapping(Path(run_dir) / "config.yaml")
    best = json.loads((Path(run_dir) / "best_prompts.json").read_text())
    algo, select_on = config.get("algo"), config.get("select_on", "dev")
    # random sets drawn from one half of train and chosen on the other leave the first unread
    from_half = algo == "random" and config.get("demonstrations_from", "half") == "half"
    chose_on_train = select_on != "dev" and not from_half
    if algo not in UNTRAINED or chose_on_train or best.get("label_word_search"):
        raise UserError(
            f"{run_dir}: {algo} with --select-on {select_on} read train answers (training, "
            "choosing on train or searching label words), so its train split is not held out; "
            f"pass runs of {', '.join(UNTRAINED)} chosen on dev, or random ones with "
            "--select-on dev+train and --demonstrations-from half"
        )
    name = re.sub(r"-s\d+$", "", Path(run_dir).name)
    return {
        "name": name,
        "config": config,
        "template": run.template,
        "returned": run.prompt,
        "pool": [p["prompt"] for p in best["prompts"]],
        "read_half": select_on != "dev",  # it chose on the half of train that rewards
        "test": {p["prompt"]: p.get("test") for p in [*best["prompts"], best["best"]]},
    }


def group_key(config: dict) -> str:
    """Runs scored on one sample: same task, data, seed, target and decoding (the reward a
    run trained on does not change a score)."""
    keys = ("task", "data", "seed", "target", "dtype", "answer_tokens")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def scoring_config(config: dict) -> TrainConfig:
    """What scoring a run's prompts needs from its config.yaml (the rest keeps the defaults)."""
    keys = ("task", "data", "seed", "target", "dtype", *SETTINGS)
    return TrainConfig.from_dict({k: config[k] for k in keys if k in config})


def held_out_context(config: dict, scorer):
    """The run's task context in the demonstrations form, every train example a candidate:
    (ctx, rendered demonstration of each train example)."""
    ctx = build_context(scoring_config(config), scorer, required=("train",))
    texts, _ = use_demonstrations(ctx, 1, balanced=False, pool="all", flag="wide_test")
    return ctx, texts


def score_held_out(ctx, texts: list[str], sample: list[int], prompt: str) -> list[float | None]:
    """The prompt's score on each sampled train example, None where the prompt shows it."""
    train = ctx.splits["train"]
    ctx.splits = {**ctx.splits, "train": [train[i] for i in sample]}
    try:
        scores = ctx.example_scores([prompt], "train")[0]
    finally:
        ctx.splits = {**ctx.splits, "train": train}
    shown = shows([prompt], [texts[i] for i in sample])[0]
    return [None if s else float(v) for v, s in zip(scores.tolist(), shown.tolist(), strict=True)]


def score_runs(run_dirs: list[str], examples: int, pool: bool, data: dict, save) -> None:
    """Score each run's prompts (and the manual prompt) into `data`, calling `save` after each;
    each score records the date, revision and machine it was made on."""
    provenance = {"date": str(datetime.date.today()), "revision": revision(), "machine": machine()}
    runs = [read_unread_run(d) for d in run_dirs]
    scorers: dict = {}
    for key in dict.fromkeys(group_key(r["config"]) for r in runs):
        members = [r for r in runs if group_key(r["config"]) == key]
        config = members[0]["config"]
        settings = scoring_config(config)
        target = (settings.target, settings.dtype)
        if target not in scorers:
            scorers[target] = build_scorer(*target)
        ctx, texts = held_out_context(config, scorers[target])
        for r in members:
            if r["template"] != ctx.template:
                raise UserError(
                    f"{r['name']} (seed {config.get('seed')}) scored prompts with the template "
                    f"{r['template']!r}, not the demonstrations form {ctx.template!r}; only runs "
                    "with --demonstrations or --algo in-context can be scored here"
                )
        group = data["groups"].setdefault(key, {"prompts": {}, "labels": {}})
        n = min(examples, len(texts))
        group.update(task=config["task"], seed=int(config.get("seed", 0)), train=len(texts))
        draw = random.Random(f"wide-{key}").sample(range(len(texts)), n)
        group.setdefault("sample", sorted(draw))  # kept on reruns
        rewarded = {id(ex) for ex in split_for_demonstrations(ctx.splits["train"])[1]}
        group["rewarded"] = [  # the sample's positions in the half that rewards
            j for j, i in enumerate(group["sample"]) if id(ctx.splits["train"][i]) in rewarded
        ]
        wanted, read_half = {"manual": ""}, set(group.get("read_half", []))
        for r in members:
            labels = [r["name"]]
            wanted[r["name"]] = r["returned"]
            for prompt in r["pool"] if pool else []:
                labels.append(f"{r['name']} ({count_pairs(prompt, texts)} pairs)")
                wanted.setdefault(labels[-1], prompt)
            read_half |= set(labels) if r["read_half"] else set()
        group["read_half"] = sorted(read_half)
        for label, prompt in wanted.items():
            group["labels"][label] = prompt
            if prompt in group["prompts"]:
                continue
            start = time.perf_counter()
            scores = score_held_out(ctx, texts, group["sample"], prompt)
            seconds = time.perf_counter() - start
            test = next((r["test"][prompt] for r in members if prompt in r["test"]), None)
            group["prompts"][prompt] = {
                "scores": scores,
                "pairs": count_pairs(prompt, texts),
                "test": test,
                "seconds": seconds,
                **provenance,
            }
            where = f"{config['task']} s{group['seed']} {label}"
            print(f"{where}: {mean(scores):.3f} ({seconds:.0f} s)", flush=True)
            save()


def mean(scores: list[float | None]) -> float:
    kept = [s for s in scores if s is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def label_scores(group: dict, label: str) -> list[float | None]:
    """The held-out scores of a label's prompt: None where the prompt shows the input, and for
    a run that chose on the half of train that rewards (`--select-on dev+train`), there."""
    scores = group["prompts"][group["labels"][label]]["scores"]
    if label not in group.get("read_half", []):
        return scores
    read = set(group["rewarded"])
    return [None if j in read else s for j, s in enumerate(scores)]


def as_tensor(scores: list[float | None]) -> torch.Tensor:
    return torch.tensor([float("nan") if s is None else s for s in scores])


def compare(data: dict, first: str, second: str) -> str:
    """`first` against `second` in each group holding both, on the inputs neither shows."""
    lines, diffs, ahead, behind, wins, losses = [], [], 0, 0, 0, 0
    for group in data["groups"].values():
        labels = group["labels"]
        if first not in labels or second not in labels:
            continue
        a, b = as_tensor(label_scores(group, first)), as_tensor(label_scores(group, second))
        both = ~(a.isnan() | b.isnan())
        diff = (a[both] - b[both]).mean().item()
        half = 1.96 * (a[both] - b[both]).std().item() / both.sum().item() ** 0.5
        test = against_manual(a, b)
        diffs.append(diff)
        wins, losses = wins + test["wins"], losses + test["losses"]
        ahead += diff - half > 0
        behind += diff + half < 0
        lines.append(
            f"  {group['task']} s{group['seed']}: {diff:+.3f} ± {half:.3f} on {int(both.sum())} "
            f"inputs (better on {test['wins']}, worse on {test['losses']}, p = {test['p']:.2g})"
        )
    if not diffs:
        return f"{first} vs {second}: no group holds both"
    head = (
        f"{first} vs {second}: {sum(diffs) / len(diffs):+.3f} mean over {len(diffs)} runs, "
        f"interval above 0 in {ahead}, below in {behind}; all runs' inputs: better on {wins}, "
        f"worse on {losses} (p = {sign_test(wins, losses):.2g})"
    )
    return "\n".join([head, *lines])


def report(data: dict, comparisons: list[str]) -> str:
    """Each prompt's held-out score against its 100-input test score, then the comparisons."""
    entries = [e for g in data["groups"].values() for e in g["prompts"].values()]
    made = sorted({f"{e['date']}, rev {e['revision']}, {e['machine']}" for e in entries})
    lines = [
        "held-out: train inputs the runs never read; scored " + "; ".join(made),
        f"{'task':20} seed  {'prompt':32} pairs  held-out (n)       test",
    ]
    for group in data["groups"].values():
        for label, prompt in sorted(group["labels"].items()):
            entry = group["prompts"].get(prompt)
            if entry is None:
                continue
            scores = label_scores(group, label)
            n = sum(s is not None for s in scores)
            test = "" if entry["test"] is None else f"{entry['test']:.2f}"
            lines.append(
                f"{group['task']:20} {group['seed']:>4}  {label:32} {entry['pairs']:>5}  "
                f"{mean(scores):.3f} ({n:>4})  {test:>6}"
            )
    lines += [means(data), agreement(data)]
    for spec in comparisons:
        first, _, second = spec.partition(":")
        lines.append(compare(data, first, second))
    return "\n".join(lines)


def means(data: dict) -> str:
    """Each label's mean held-out and test score over the runs (groups) that hold it, per
    target when the file holds several (the manual prompt on two targets is two prompts)."""
    rows: dict[str, list[tuple[float, float | None]]] = {}
    targets = {json.loads(key)["target"] for key in data["groups"]}
    for key, group in data["groups"].items():
        on = f" on {json.loads(key)['target']}" if len(targets) > 1 else ""
        for label, prompt in group["labels"].items():
            if prompt in group["prompts"]:
                held = mean(label_scores(group, label))
                rows.setdefault(label + on, []).append((held, group["prompts"][prompt]["test"]))
    lines = ["mean over runs: held-out / test (runs)"]
    for label, values in sorted(rows.items()):
        tests = [t for _, t in values if t is not None]
        test = f"{sum(tests) / len(tests):.3f}" if len(tests) == len(values) else "-"
        held = sum(h for h, _ in values) / len(values)
        lines.append(f"  {label:32} {held:.3f} / {test:>5} ({len(values)})")
    return "\n".join(lines)


def agreement(data: dict) -> str:
    """Per task, the Pearson r over prompts of the held-out score with the 100-input test's:
    how far test alone ranks prompts as the larger split does."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for group in data["groups"].values():
        for entry in group["prompts"].values():
            if entry["test"] is not None and entry["pairs"]:
                pairs.setdefault(group["task"], []).append((mean(entry["scores"]), entry["test"]))
    parts = [
        f"{task} {pearson(*map(torch.tensor, zip(*values))):.2f} ({len(values)} prompts)"
        for task, values in pairs.items()
        if len(values) > 2
    ]
    return "held-out against test, Pearson r over the prompts showing pairs: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="finished train --out dirs")
    parser.add_argument("--examples", type=int, default=1000, help="train inputs per seed")
    parser.add_argument("--pool", action="store_true", help="score each run's whole pool")
    parser.add_argument("--out", type=Path, required=True, help="JSON of every score")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B")
    parser.add_argument("--report", action="store_true", help="print --out, score nothing")
    args = parser.parse_args()
    data = {"groups": {}}
    if args.out.is_file():
        data = json.loads(args.out.read_text())
    if not args.report:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save = lambda: atomic_write_text(args.out, json.dumps(data))  # noqa: E731
        score_runs(args.runs, args.examples, args.pool, data, save)
    print(report(data, args.compare))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
