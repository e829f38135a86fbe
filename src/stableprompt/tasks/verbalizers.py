"""Label words a target can say: automatic verbalizer search (LM-BFF style, Gao et al. 2021).

RLPrompt's label words were chosen for RoBERTa-large. A small causal target may answer one of
them for almost every input (SmolLM2-135M says " great" after 99% of SST-2 sentences), which
leaves a prompt nothing to work with. `search_label_words` scores the task's manual prompt once
per train/dev example with every candidate word as a label, then picks the one word per class
whose set maximises balanced accuracy (mean per-class recall), ties broken by the mean
probability margin of the correct word. Test is never read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch

from stableprompt.errors import UserError
from stableprompt.tasks.data import validate_labels

# Candidates per class for the built-in tasks; the task's own words come first (see `candidates`).
_SENTIMENT2 = (
    ("terrible", "bad", "negative", "awful", "poor", "boring"),
    ("great", "good", "positive", "excellent", "wonderful", "fun"),
)
_SENTIMENT5 = (
    ("terrible", "awful", "horrible"),
    ("bad", "negative", "poor"),
    ("okay", "neutral", "average", "fine"),
    ("good", "positive", "nice"),
    ("great", "excellent", "amazing", "perfect"),
)
CANDIDATES: dict[str, tuple[tuple[str, ...], ...]] = {
    **dict.fromkeys(("sst-2", "mr", "cr", "yelp-2", "demo"), _SENTIMENT2),
    **dict.fromkeys(("sst-5", "yelp-5"), _SENTIMENT5),
    "agnews": (
        ("World", "world", "Politics", "politics", "International"),
        ("Sports", "sports", "Sport", "sport"),
        ("Business", "business", "Economy", "Finance", "finance"),
        ("Tech", "technology", "Technology", "Science", "science"),
    ),
    "trec": (
        ("Description", "description", "Definition", "definition", "Explanation"),
        ("Entity", "entity", "Thing", "thing", "Object"),
        ("Expression", "Abbreviation", "abbreviation", "Acronym"),
        ("Human", "human", "Person", "person", "Who"),
        ("Location", "location", "Place", "place", "Where"),
        ("Number", "number", "Numeric", "Count", "When"),
    ),
    "subj": (("subjective", "opinion", "personal"), ("objective", "fact", "factual")),
}
EXHAUSTIVE_LIMIT = 20_000  # word sets scored one by one; above it, coordinate ascent


@dataclass(frozen=True)
class LabelWordChoice:
    """The chosen words, how the manual prompt scores with them on the search examples, and the
    task's own words' score for comparison."""

    words: tuple[str, ...]
    balanced_accuracy: float
    default_words: tuple[str, ...]
    default_balanced_accuracy: float
    examples: int

    def to_dict(self) -> dict:
        return {
            "label_words": list(self.words),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "default_label_words": list(self.default_words),
            "default_balanced_accuracy": round(self.default_balanced_accuracy, 4),
            "examples": self.examples,
        }


def parse_label_words(value: str, template: str) -> tuple[str, ...]:
    """`--label-words "negative,positive"` -> (" negative", " positive"): a word gets a leading
    space unless it has one or the template ends in whitespace (as task YAML files do)."""
    words = [w for w in (part.strip() for part in value.split(",")) if w]
    if len(words) < 2 or len(set(words)) != len(words):
        raise UserError(
            f"--label-words needs at least two distinct comma-separated words, got {value!r} "
            "(e.g. --label-words negative,positive, or auto, or task)"
        )
    space = "" if template[-1:].isspace() else " "
    return tuple(space + w for w in words)


def candidates(task_name: str, default_words: tuple[str, ...]) -> list[list[str]]:
    """Candidate words per class: the task's own word first, then the built-in list."""
    space = " " if default_words and default_words[0][:1].isspace() else ""
    built_in = CANDIDATES.get(task_name, ((),) * len(default_words))
    if len(built_in) != len(default_words):
        built_in = ((),) * len(default_words)
    return [
        list(dict.fromkeys([default, *(space + w for w in extra)]))
        for default, extra in zip(default_words, built_in)
    ]


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes present in `labels` of the share of that class predicted right."""
    recalls = [
        (predictions[labels == c] == c).float().mean().item()
        for c in range(num_classes)
        if (labels == c).any()
    ]
    return sum(recalls) / len(recalls)


def _score_set(logprobs: torch.Tensor, labels: torch.Tensor, idx: tuple[int, ...]):
    """(balanced accuracy, mean margin) of one word set; `logprobs` is [N, W] over candidates."""
    chosen = logprobs[:, list(idx)]
    probs = torch.softmax(chosen, dim=-1)
    correct = probs.gather(1, labels[:, None]).squeeze(1)
    other = probs.scatter(1, labels[:, None], float("-inf")).amax(1)
    bal = balanced_accuracy(chosen.argmax(-1), labels, len(idx))
    return bal, (correct - other).mean().item()


def choose_word_set(
    logprobs: torch.Tensor, labels: torch.Tensor, groups: list[list[int]]
) -> tuple[tuple[int, ...], float]:
    """Best word set (one candidate column per class) by (balanced accuracy, margin).

    Every combination is scored when there are at most EXHAUSTIVE_LIMIT; otherwise coordinate
    ascent from the first candidates (each class's word re-chosen in turn until nothing moves).
    """
    combos = 1
    for g in groups:
        combos *= len(g)
    if combos <= EXHAUSTIVE_LIMIT:
        best = max(itertools.product(*groups), key=lambda idx: _score_set(logprobs, labels, idx))
        return best, _score_set(logprobs, labels, best)[0]
    current = [g[0] for g in groups]
    changed = True
    while changed:
        changed = False
        for c, group in enumerate(groups):

            def key(w, c=c):
                return _score_set(logprobs, labels, (*current[:c], w, *current[c + 1 :]))

            best_w = max(group, key=key)
            if key(best_w) > key(current[c]):
                current[c], changed = best_w, True
    return tuple(current), _score_set(logprobs, labels, tuple(current))[0]


def single_token(scorer, words: list[str]) -> list[str]:
    """Keep the words the target's tokenizer spells as one token (summed log-probs of several
    tokens are not comparable with one token's); scorers without a tokenizer keep all."""
    tokenizer = getattr(scorer, "tokenizer", None)
    if tokenizer is None:
        return words
    return [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) == 1]


def search_label_words(
    scorer,
    prompt: str,
    template: str,
    examples: list,
    groups: list[list[str]],
) -> LabelWordChoice:
    """Pick one word per class from `groups` for `prompt` on `examples` (labelled train/dev).

    One scoring per example (all candidate words in one call), so it costs len(examples) target
    calls. A class whose every candidate the target splits into several tokens keeps its first
    (default) word.
    """
    kept = [single_token(scorer, g) or g[:1] for g in groups]
    flat = list(dict.fromkeys(w for g in kept for w in g))
    column = {w: i for i, w in enumerate(flat)}
    logprobs = scorer.score([prompt], [ex.text for ex in examples], template, flat)[0]
    labels = torch.tensor([ex.label for ex in examples])
    index_groups = [[column[w] for w in g] for g in kept]
    idx, bal = choose_word_set(logprobs, labels, index_groups)
    default = tuple(g[0] for g in groups)
    if all(w in column for w in default):
        default_bal = _score_set(logprobs, labels, tuple(column[w] for w in default))[0]
    else:
        default_bal = float("nan")
    return LabelWordChoice(
        words=tuple(flat[i] for i in idx),
        balanced_accuracy=bal,
        default_words=default,
        default_balanced_accuracy=default_bal,
        examples=len(examples),
    )


def resolve_label_words(task, setting: str, scorer, template: str, splits: dict):
    """The task with the label words `setting` names (task | auto | "w1,w2,...") and a record
    of the choice for the run directory (None when the task's own words stand)."""
    if setting == "task":
        return task, None
    if task.kind != "classification":
        if setting == "auto":  # letters, or no label words at all: nothing to choose
            return task, None
        raise UserError(
            f"--label-words applies to classification tasks; {task.name} is {task.kind} "
            "(drop --label-words)"
        )
    if setting != "auto":
        words = parse_label_words(setting, template)
        if len(words) != task.num_classes:
            raise UserError(
                f"--label-words gives {len(words)} words but {task.name} has "
                f"{task.num_classes} classes (one word per class, in label order)"
            )
        return replace(task, label_words=words), {"label_words": list(words)}
    validate_labels(splits, task.num_classes, required=())  # before any label indexes a tensor
    examples = list(splits.get("train") or []) + list(splits.get("dev") or [])
    if not examples:
        print("label words: the task's own (no train or dev examples to choose them on)")
        return task, None
    groups = candidates(task.name, task.label_words)
    choice = search_label_words(scorer, task.manual_prompt, template, examples, groups)
    print(
        f"label words (auto, {choice.examples} train+dev examples, manual prompt "
        f"{task.manual_prompt!r}): {', '.join(w.strip() for w in choice.words)} "
        f"(balanced accuracy {choice.balanced_accuracy:.3f}; the task's "
        f"{', '.join(w.strip() for w in choice.default_words)}: "
        f"{choice.default_balanced_accuracy:.3f})"
    )
    return replace(task, label_words=choice.words), {"setting": "auto", **choice.to_dict()}
