"""Test accuracy of a demonstrations run's best set at each of its dev evaluations.

    python benchmarks/greedy_sets.py docs/results/claims/trec/16-42/sql-s0-demos6-balanced-all-32k

Reads the run's metrics.jsonl (at every evaluation `dev_prompt`, the best on dev among the
policy's greedy set and the `--eval-samples` best sets sampled since the evaluation before, with
its dev accuracy) and best_prompts.json (template, label words), scores each on the split's test
set in fp32, and prints step, dev, test accuracy and test balanced accuracy (the
mean of the per-class recalls; TREC's test is skewed, its train and dev are not). It reads test
to see whether the policy proposes better sets as it trains; no method chooses on it. Writes the
rows as JSON to `--out`.

It also prints a summary: the mean test and balanced test accuracy per third of the
evaluations, Pearson r of dev with each, and what three ways of choosing among the run's sets
would have returned: the dev maximum over the run's pool (what the trainer returns), the last
evaluation's, and the dev-best of the last third of evaluations' (each chooses on dev; test
only reports). `--summarize F` prints and rewrites the summary of a JSON written before, without
scoring again.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import yaml
from scoring import machine, revision

from stableprompt.models import build_scorer
from stableprompt.tasks import load_kshot_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--out", help="write the rows here as JSON")
    parser.add_argument("--summarize", metavar="F", help="only summarize this earlier output")
    args = parser.parse_args()
    if args.summarize:
        path = Path(args.summarize)
        saved = json.loads(path.read_text())
        returned = saved.get("returned_test", saved["choices"]["pool's dev maximum"])
        path.write_text(json.dumps(result(saved["rows"], returned), indent=1))
        return
    run = Path(args.run_dir)
    config = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "best_prompts.json").read_text())
    test = load_kshot_dir(config["data"])["test"]
    texts, labels = [e.text for e in test], torch.tensor([e.label for e in test])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["dev_accuracy"], r["dev_prompt"]) for r in rows if "dev_prompt" in r]
    prompts = sorted({p for _, _, p in evals})
    scorer = build_scorer(config["target"], "float32")
    scores = scorer.score(prompts, texts, summary["template"], summary["label_words"])
    classes = range(len(summary["label_words"]))
    print(f"{run}  rev {revision()}  {machine()}")
    out = []
    for step, dev, prompt in evals:
        pred = scores[prompts.index(prompt)].argmax(-1)
        recall = [
            ((pred == c) & (labels == c)).sum().item() / (labels == c).sum().item() for c in classes
        ]
        row = dict(
            step=step, dev=round(dev, 3), test=round((pred == labels).float().mean().item(), 3)
        )
        row["test_balanced"] = round(sum(recall) / len(recall), 3)
        out.append(row)
        print(row)
    saved = result(out, summary["best"]["test"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(saved, indent=1))


def result(rows: list[dict], returned_test: float) -> dict:
    """The rows with their summary and the three choices, printed and returned for the JSON."""
    third = max(1, len(rows) // 3)
    # the last third is the one `selection_choices` chooses among; the middle takes the rest
    parts = [rows[:third], rows[third : len(rows) - third], rows[len(rows) - third :]]
    dev = [r["dev"] for r in rows]
    summary = {}
    for key in ("test", "test_balanced"):
        summary[key] = {
            "mean": round(statistics.mean(r[key] for r in rows), 3),
            "mean_per_third": [round(statistics.mean(r[key] for r in p), 3) for p in parts if p],
            "r_with_dev": round(statistics.correlation(dev, [r[key] for r in rows]), 2),
        }
        print(f"{key}: {summary[key]}")
    choices = selection_choices(rows, returned_test)
    for name, accuracy in choices.items():
        print(f"test of the set chosen as the {name}: {accuracy:.3f}")
    return {"rows": rows, "returned_test": returned_test, "summary": summary, "choices": choices}


def selection_choices(rows: list[dict], returned_test: float) -> dict[str, float]:
    """Test accuracy of the set each way of choosing returns (each chooses on dev only)."""
    late = rows[-max(1, len(rows) // 3) :]
    return {
        "pool's dev maximum": returned_test,
        "last evaluation's": rows[-1]["test"],
        "dev-best of the last third's evaluations": max(late, key=lambda r: r["dev"])["test"],
    }


if __name__ == "__main__":
    main()
