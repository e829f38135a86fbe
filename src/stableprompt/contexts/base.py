"""What every task context offers the trainer and the algorithms.

A context owns a task's examples, the frozen model that scores prompts (`scorer`, whose `calls`
counter is the budget's unit) and the two ways of scoring: `rewards` (training signal, any scale)
and `evaluate` (the task metric that selects prompts on dev and reports them on test). A call
costs at most len(prompts) x len(examples) target calls, which is what the budget projects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from stableprompt.tasks.registry import TaskSpec


@dataclass(frozen=True)
class Metric:
    """Scores of several prompts under one named metric (accuracy, exact_match, joint, ...)."""

    name: str
    values: list[float]


class TaskContext(Protocol):
    """The contract of the text, style transfer and image contexts (subclass it for a new one)."""

    task: TaskSpec
    splits: dict[str, list]
    scorer: Any  # counts `calls`: (prompt, example) pairs asked for, cache hits included
    template: str  # with {prompt} (and {input} for text); solved pairs rewrite it
    label_words: list[str]  # empty for tasks without label words
    generation: bool  # the target writes answers (no label words)
    label_search: dict | None  # how the label words were chosen, for the run directory

    @property
    def metric(self) -> str:
        """Name of the metric `evaluate` returns."""
        ...

    def rewards(
        self,
        prompts: list[str],
        examples: Sequence,
        kind: str = "rlprompt",
        keep: Tensor | None = None,
    ) -> Tensor:
        """[prompts] raw train reward; `kind` names an algorithm's reward where tasks have one.
        `keep` [prompts, examples]: False leaves that pair out of the prompt's reward (an example
        the prompt shows as a demonstration); only text tasks take it."""
        ...

    def example_scores(
        self,
        prompts: list[str],
        split: str,
        label_words: list[str] | None = None,
        rows: Sequence[int] | None = None,
    ) -> Tensor:
        """[prompts, examples] the task metric of each prompt on each example of a split (1/0
        for accuracy), or on the split's examples at `rows` (`pick`); `label_words` as for
        `report`."""
        ...

    def evaluate(
        self, prompts: list[str], split: str, label_words: list[str] | None = None
    ) -> Metric:
        """The task metric of each prompt on a whole split (dev selects, test reports)."""
        scores = self.example_scores(prompts, split, label_words)
        return Metric(self.metric, scores.mean(-1).tolist())

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        """One prompt on a split: "accuracy" (the metric's value), "ci95", "n" and details;
        `label_words` replace the run's words (classification only: `fit_label_words`)."""
        ...

    def fit_label_words(self, prompt: str) -> dict:
        """Label words chosen for `prompt` itself and its dev score with them ({"label_words",
        "dev"}), where the context chose its words automatically; {} otherwise."""
        return {}

    def fit_label_words_calls(self) -> int:
        """Target calls of one `fit_label_words` (0 where it does nothing)."""
        return 0

    def reward_metrics(self) -> dict[str, float]:
        """Extra metrics of the last `rewards` call for the step's log (none by default)."""
        return {}


def pick(examples: list, rows: Sequence[int] | None) -> list:
    """The examples at `rows`, in that order (all of them for None)."""
    return examples if rows is None else [examples[i] for i in rows]
