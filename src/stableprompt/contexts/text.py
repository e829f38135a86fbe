"""The text task context: classification by label-word log-probabilities, generation by the
target's greedy answers (or the likelihood of the gold answer while training)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from stableprompt.contexts.base import TaskContext, pick
from stableprompt.errors import UserError
from stableprompt.models.scoring import TargetScorer
from stableprompt.tasks import Example, TaskSpec, accuracy_report, validate_labels
from stableprompt.tasks.metrics import generation_report, generation_score
from stableprompt.tasks.registry import check_template, fill_template
from stableprompt.tasks.rewards import (
    appo_reward,
    example_mean,
    rlprompt_reward,
    worst_class_reward,
)
from stableprompt.tasks.verbalizers import candidates, search_label_words

# Log-probability floor of an answer: one hopeless example (log p = -60) should not outweigh
# everything else in a mean of log-likelihoods.
ANSWER_LOGPROB_FLOOR = -20.0
# The answer cap's default: the longest train/dev answer plus this many tokens. An answer cut
# there is longer than any gold answer, so the cut makes no exact match unless normalisation
# strips the extra tokens (punctuation, articles); the margin covers a target that spells a gold
# answer in more tokens than the tokenizer does.
ANSWER_MARGIN = 4
ANSWER_TOKENS_WITHOUT_TOKENIZER = 32


class TextContext(TaskContext):
    """A text task: examples, the target scorer, rewards and evaluation.

    Generation tasks (`task.kind == "generation"`) have no label words: the target answers each
    filled template greedily (`max_new_tokens`, cut at the first newline, batched and cached)
    and the reward/accuracy of a prompt is the task metric's mean over the examples, in [0, 1].
    With `generation_reward="likelihood"` the train reward is instead the mean probability the
    target gives the first gold answer after the filled template (also in [0, 1]); with
    `"loglikelihood"` the mean of its log, floored at ANSWER_LOGPROB_FLOOR.
    """

    def __init__(
        self,
        task: TaskSpec,
        splits: dict[str, list[Example]],
        scorer: TargetScorer,
        template: str | None = None,
        required: tuple[str, ...] = ("train", "dev"),
        max_new_tokens: int | None = None,
        generation_reward: str = "metric",
        label_search: dict | None = None,
        metric_fn: Callable[[str, Example], float] | None = None,
    ):
        self.generation = task.kind == "generation"
        if metric_fn is not None and not self.generation:
            raise UserError(
                f"a metric function applies to generation tasks; {task.name} is {task.kind}, "
                "whose metric is accuracy over its label words (drop metric=)"
            )
        self.metric_fn = metric_fn  # the user's metric(prediction, example) -> [0, 1]
        self.label_search = label_search  # how the label words were chosen (--label-words)
        validate_labels(splits, task.num_classes, required=required, generation=self.generation)
        self.task, self.splits, self.scorer = task, splits, scorer
        self.max_new_tokens = max_new_tokens or self.answer_cap()
        self.generation_reward = generation_reward
        self.template = check_template(template or task.template)
        self.label_words = list(task.label_words)

    def answer_cap(self) -> int:
        """`--answer-tokens`' default: the longest train/dev answer in the target's tokens plus
        ANSWER_MARGIN (without a local tokenizer, ANSWER_TOKENS_WITHOUT_TOKENIZER)."""
        tokenizer = getattr(self.scorer, "tokenizer", None)
        answers = {
            answer.strip()
            for split in ("train", "dev")
            for ex in self.splits.get(split) or []
            for answer in ex.answers
        }
        if not self.generation or tokenizer is None or not answers:
            return ANSWER_TOKENS_WITHOUT_TOKENIZER
        ids = tokenizer([" " + a for a in sorted(answers)], add_special_tokens=False).input_ids
        return max(map(len, ids)) + ANSWER_MARGIN

    def logprobs(
        self, prompts: list[str], examples: list[Example], label_words: list[str] | None = None
    ) -> torch.Tensor:
        """[prompts, examples, classes] label-word log-probs from the target (the context's
        words unless `label_words` are given)."""
        if self.generation:
            raise UserError(f"task {self.task.name} is a generation task and has no label words")
        words = list(label_words or self.label_words)
        return self.scorer.score(prompts, [ex.text for ex in examples], self.template, words)

    def generation_scores(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[prompts, examples] metric of the target's answers (one batched generate call)."""
        _, scores = self.answers([(p, ex) for p in prompts for ex in examples])
        return scores.view(len(prompts), len(examples))

    def answers(self, pairs: list[tuple[str, Example]]) -> tuple[list[str], torch.Tensor]:
        """The target's greedy answer to each (prompt, example) pair and its metric score (one
        batched generate call)."""
        texts = [fill_template(self.template, p, ex.text) for p, ex in pairs]
        answers = self.scorer.generate(texts, self.max_new_tokens, stop="\n")
        scored = zip(answers, [ex for _, ex in pairs], strict=True)
        if self.metric_fn is not None:
            scores = [self._user_metric(answer, ex) for answer, ex in scored]
        else:
            scores = [generation_score(answer, ex.target, self.metric) for answer, ex in scored]
        return answers, torch.tensor(scores, dtype=torch.float32)

    def answer_logprobs(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[prompts, examples] log-probability that the target writes each example's first gold
        answer and then ends the line, as greedy generation is cut (teacher-forced: one scoring
        pass per example, no decoding), floored at ANSWER_LOGPROB_FLOOR; an example without an
        answer gets the floor."""
        space = "" if self.template[-1:].isspace() else " "
        columns = []
        for ex in examples:
            if not ex.answers:
                columns.append(torch.full((len(prompts),), ANSWER_LOGPROB_FLOOR))
                continue
            line = space + ex.answers[0].strip() + "\n"
            logprobs = self.scorer.score(prompts, [ex.text], self.template, [line])
            columns.append(logprobs[:, 0, 0].clamp(min=ANSWER_LOGPROB_FLOOR))
        # checked after scoring: a remote server reveals its mode on the first query
        if getattr(self.scorer, "approximate", False):
            raise UserError(
                f"target {self.scorer.name} gives only approximate label scores, so it cannot "
                "score answer likelihoods (use --generation-reward metric)"
            )
        return torch.stack(columns, dim=1)

    def rewards(
        self,
        prompts: list[str],
        examples: list[Example],
        kind: str = "rlprompt",
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw (unnormalised) reward per prompt: RLPrompt's shaped gap, or StablePrompt's; for
        generation tasks the metric's mean, the answer likelihood or its log (whatever `kind`).
        `keep` [prompts, examples]: False leaves that pair out of the prompt's mean."""
        if self.generation and self.generation_reward == "likelihood":
            return example_mean(self.answer_logprobs(prompts, examples).exp(), keep)
        if self.generation and self.generation_reward == "loglikelihood":
            return example_mean(self.answer_logprobs(prompts, examples), keep)
        if self.generation:
            return example_mean(self.generation_scores(prompts, examples), keep)
        labels = torch.tensor([ex.label for ex in examples])
        logprobs = self.logprobs(prompts, examples)
        if kind == "rlprompt":
            return rlprompt_reward(logprobs, labels, keep=keep)
        if kind == "worst-class":
            return worst_class_reward(logprobs, labels, keep=keep)
        if kind == "appo":
            return appo_reward(logprobs, labels, keep=keep)
        raise ValueError(f"unknown reward kind {kind!r}")

    # -- prompts written per input (--conditioning input): prompts[i] serves examples[i] alone --

    def pair_logprobs(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[pairs, classes] label-word log-probs of each prompt on its own example."""
        pairs = [(p, ex.text) for p, ex in zip(prompts, examples, strict=True)]
        return self.scorer.score_pairs(pairs, self.template, self.label_words)

    def pair_rewards(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[pairs] StablePrompt's reward of each prompt on its own example alone: 10 x correct +
        0.1 x margin (`appo_reward` of that one pair), or the generation reward of that example."""
        if self.generation and self.generation_reward != "metric":
            pairs = zip(prompts, examples, strict=True)
            logprobs = torch.stack([self.answer_logprobs([p], [ex])[0, 0] for p, ex in pairs])
            return logprobs.exp() if self.generation_reward == "likelihood" else logprobs
        if self.generation:
            return self.answers(list(zip(prompts, examples, strict=True)))[1]
        logprobs = self.pair_logprobs(prompts, examples)
        labels = torch.tensor([ex.label for ex in examples])
        return torch.cat(
            [appo_reward(lp.view(1, 1, -1), y.view(1)) for lp, y in zip(logprobs, labels)]
        )

    def pair_report(self, prompts: list[str], examples: list[Example]) -> dict:
        """`report` of prompts written per input, each scored on its own example, with each
        pair's prediction ("predictions": the answer, or the label word chosen)."""
        if self.generation:
            answers, scores = self.answers(list(zip(prompts, examples, strict=True)))
            return generation_report(scores.tolist()) | {"predictions": answers}
        predicted = self.pair_logprobs(prompts, examples).argmax(-1).tolist()
        report = accuracy_report(predicted, [ex.label for ex in examples], self.task.num_classes)
        return report | {"predictions": [self.label_words[i] for i in predicted]}

    def _user_metric(self, prediction: str, example: Example) -> float:
        value = self.metric_fn(prediction, example)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:  # NaN fails too
            raise UserError(
                f"metric {self.metric} returned {value!r} for the answer {prediction[:40]!r}; a "
                "metric must return a number in [0, 1] (higher is better)"
            )
        return float(value)

    @property
    def metric(self) -> str:
        if self.metric_fn is not None:
            return getattr(self.metric_fn, "__name__", "custom metric")
        return self.task.metric or ("exact_match" if self.generation else "accuracy")

    def example_scores(
        self,
        prompts: list[str],
        split: str,
        label_words: list[str] | None = None,
        rows: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """[prompts, examples]: 1/0 correct, or the generation metric of each answer."""
        examples = pick(self.splits[split], rows)
        if self.generation:
            return self.generation_scores(prompts, examples)
        predictions = self.logprobs(prompts, examples, label_words).argmax(-1)
        labels = torch.tensor([ex.label for ex in examples])
        return (predictions == labels).float()

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        examples = self.splits[split]
        if self.generation:
            return generation_report(self.generation_scores([prompt], examples)[0].tolist())
        predictions = self.logprobs([prompt], examples, label_words)[0].argmax(-1).tolist()
        return accuracy_report(predictions, [ex.label for ex in examples], self.task.num_classes)

    def fit_label_words_calls(self) -> int:
        """|train| + 2 |dev|: the search on train+dev, then dev with the chosen words; 0 when
        the run's words were not chosen automatically (nothing to re-choose)."""
        if self.generation or (self.label_search or {}).get("setting") != "auto":
            return 0
        return len(self.splits.get("train") or []) + 2 * len(self.splits.get("dev") or [])

    def fit_label_words(self, prompt: str) -> dict:
        """With `--label-words auto`: the words the same search picks for `prompt` (rather than
        for the manual prompt) on train+dev, and the prompt's dev score with them."""
        if not self.fit_label_words_calls():
            return {}
        examples = list(self.splits.get("train") or []) + list(self.splits.get("dev") or [])
        groups = candidates(self.task.name, self.task.label_words)
        words = list(search_label_words(self.scorer, prompt, self.template, examples, groups).words)
        return {"label_words": words, "dev": self.evaluate([prompt], "dev", words).values[0]}
