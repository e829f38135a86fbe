"""Label words re-chosen for a learned prompt (issue 13): do they close the gap to the manual one?

    python benchmarks/refit_words.py             # reads docs/results/claims, prints a table

`--label-words auto` chooses the words for the task's manual prompt; every learned prompt of a
run is then trained and scored with them. Here, for each SST-2 split's manual prompt, its best
learned prompts (sparse-sql at 8k and 32k calls) and one natural prompt a user might write, the
same search (train+dev only, test never read) picks the words for that prompt, and the prompt
is scored on test with them. One process, one scorer, fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json

import torch
from scoring import ROOT, machine, revision

from stableprompt.models import build_scorer
from stableprompt.tasks import get_task, load_kshot_dir
from stableprompt.tasks.verbalizers import candidates, search_label_words

SPLITS = ("16-100", "16-13", "16-42")
RUNS = {
    "manual": "manual-s0",
    "sparse-sql 8k": "sparse-sql-s0",
    "sparse-sql 32k": "sparse-sql-s0-32k",
}
NATURAL = "The sentiment of this review is"  # a prompt a person might write instead of `It was`


def words_and_accuracy(scorer, prompt: str, words: list[str], test: list) -> str:
    """`words | test accuracy` of `prompt` with `words`."""
    logprobs = scorer.score([prompt], [ex.text for ex in test], "{input} {prompt}", words)[0]
    labels = torch.tensor([ex.label for ex in test])
    accuracy = (logprobs.argmax(-1) == labels).float().mean().item()
    return f"{', '.join(w.strip() for w in words)} | {accuracy:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", default="docs/results/claims/sst-2")
    parser.add_argument("--data", default="../shared/data/fsc/16-shot/sst-2")
    parser.add_argument("--target", default="smollm2-135m")
    args = parser.parse_args()
    scorer = build_scorer(args.target, "float32")
    scorer.prefix_store_tokens = 120_000  # a split's test inputs stay encoded for every prompt
    task = get_task("sst-2")
    groups = candidates("sst-2", task.label_words)
    print(f"{datetime.date.today()}, revision {revision()}, {machine()}, target {args.target}")
    print("| split | prompt (source) | run's words | test | re-chosen words | test |")
    print("|---|---|---|---:|---|---:|")
    for split in SPLITS:
        splits = load_kshot_dir(ROOT / args.data / split)
        search = list(splits["train"]) + list(splits["dev"])
        rows = []
        for source, run in RUNS.items():
            best = ROOT / args.claims / split / run / "best_prompts.json"
            if best.is_file():
                summary = json.loads(best.read_text())
                rows.append((summary["prompts"][0]["prompt"], source, summary["label_words"]))
        rows.append((NATURAL, "natural", None))
        for prompt, source, words in rows:
            chosen = search_label_words(scorer, prompt, task.template, search, groups).words
            before = words_and_accuracy(scorer, prompt, words, splits["test"]) if words else "- | -"
            after = words_and_accuracy(scorer, prompt, list(chosen), splits["test"])
            print(f"| {split} | `{prompt}` ({source}) | {before} | {after} |", flush=True)


if __name__ == "__main__":
    main()
