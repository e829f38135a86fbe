"""The contract every optimiser implements; the trainer owns everything else (dev evaluation,
the pool, the budget, checkpoints, test scoring)."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

import torch

from stableprompt.config import DEFAULT_TRAIN_EXAMPLES, TrainConfig
from stableprompt.contexts.base import TaskContext
from stableprompt.errors import UserError
from stableprompt.selection import split_halves
from stableprompt.tasks.demonstrations import show_solved_pairs, shows, use_demonstrations


class Algorithm(ABC):
    """One RL method. The trainer calls `train_step` once per step and `eval_prompts` to evaluate.

    Checkpoints hold `tensors()` (safetensors: weights, target networks, anchors) and `state()`
    (optimizer, buffers, counters: anything `torch.save` writes and `weights_only=True` reads).
    A step's metrics may carry `dev_scores` ({prompt: dev score}) for prompts the algorithm
    scored on dev itself; the trainer pools them and does not log them.

    Budget: `step_calls(step)` must bound the target calls `train_step(step)` spends (rewards,
    and any dev scoring it does itself), and `prompts_per_eval()` the prompts an evaluation
    scores, so that the trainer can stop before a step or an evaluation would pass the cap.
    Both are bounds: `dev_scores` does not score a prompt twice in a run.

    The trainer scores eval prompts with `dev_scores` and the pool on test with `report`: the
    context's metric of each fixed prompt, unless the algorithm's "prompts" are not fixed text
    (a prompt written per input: algorithms/conditioned.py), and adds `summary()` to
    best_prompts.json.
    """

    trainable = True  # False: fixed-prompt baselines (no manual-prompt check, no learning)
    # Under --demonstrations-from all: the candidates, candidate i being train example i (a
    # prompt is not scored for selection on the train examples it shows).
    shown_texts: list[str] | None = None
    # Prompts made of solved pairs (--demonstrations, in-context): every pair one may show, so
    # best_prompts.json and the summary can say how many each shows.
    pair_texts: list[str] | None = None

    def __init__(self, config: TrainConfig, ctx: TaskContext):
        self.config, self.ctx = config, ctx
        # Every fixed prompt's selection score so far (`dev_scores`); checkpoints keep it.
        self.dev_seen: dict[str, float] = {}
        # Each one's mean on the even- and odd-numbered examples (`split_half_reliability`).
        self.dev_halves: dict[str, list[float]] = {}
        if config.target_shots:  # before a subclass reads the template or train
            show_solved_pairs(ctx, config.target_shots, config.seed)

    def train_examples(self) -> list:
        """The train examples a step scores: all, or a fresh random `examples_per_step()`."""
        train = self.ctx.splits["train"]
        n = self.examples_per_step()
        return train if n >= len(train) else random.sample(train, n)

    def examples_per_step(self) -> int:
        """How many train examples `train_examples()` returns."""
        n = self.config.train_examples or DEFAULT_TRAIN_EXAMPLES
        return min(n, len(self.ctx.splits["train"]))

    def total_steps(self) -> int:
        """Steps the trainer runs: `--steps`, none for fixed prompts (scored at step 0)."""
        return self.config.steps if self.trainable else 0

    @abstractmethod
    def train_step(self, step: int) -> dict:
        """One update. Returns metrics: at least reward_mean, reward_std and a sample `prompt`."""

    @abstractmethod
    def eval_prompts(self) -> list[str]:
        """Prompts to score on dev now (the greedy prompt for token policies)."""

    def manual_prompt(self) -> str | None:
        """The prompt a run is checked against: the task's manual prompt (None without one);
        with --demonstrations the empty prompt, which is the manual prompt with none shown."""
        if self.config.demonstration_counts:
            return ""
        return self.ctx.task.manual_prompt or None

    def instructions_to_rewrite(self) -> list[str]:
        """--add-manual: the instructions the agent's meta-prompts ask it to rewrite, one per
        meta-prompt ('' asks for a fresh one): [''], [manual] or, with `both`, ['', manual],
        which steps take in turn. Called before the agent loads, so a task without a manual
        prompt fails at once."""
        if self.config.add_manual == "no":
            return [""]
        if not self.ctx.task.manual_prompt:
            raise UserError(
                f"task {self.ctx.task.name} has no manual prompt to rewrite (drop --add-manual)"
            )
        manual = self.ctx.task.manual_prompt
        return [manual] if self.config.add_manual == "yes" else ["", manual]

    def use_demonstrations(self) -> tuple[list[str], list[int] | None]:
        """Switch the context to prompts made of demonstrations (tasks/demonstrations.py);
        returns the candidates rendered and their classes."""
        c = self.config
        texts, classes = use_demonstrations(
            self.ctx, max(c.demonstration_counts), c.balanced_demonstrations, c.demonstrations_from
        )
        self.pair_texts = texts
        if c.demonstrations_from == "all":
            self.shown_texts = texts
        return texts, classes

    def selection_size(self) -> int:
        """How many examples `selection_scores` scores a prompt on (target calls)."""
        dev = len(self.ctx.splits["dev"])
        return dev + len(self.ctx.splits["train"]) if self.config.select_on == "dev+train" else dev

    def refit_calls(self) -> int:
        """Calls of choosing each pool prompt's own label words at the end (`fit_label_words`)."""
        c = self.config
        wanted = (  # solved pairs carry the words they were rendered with: no refit
            c.refit_label_words
            and c.conditioning == "task"
            and not c.shows_pairs
            and c.select_on == "dev"  # the words would be ranked on dev alone
        )
        return c.pool_size * self.ctx.fit_label_words_calls() if wanted else 0

    def selection_scores(
        self,
        prompts: list[str],
        label_words: list[str] | None = None,
        rows: list[int] | None = None,
    ) -> torch.Tensor:
        """[prompts, examples] each prompt's score on the examples that choose prompts
        (`--select-on`): dev, then train, or those at `rows` of that sequence in that order;
        NaN on a train example the prompt shows."""
        if self.config.select_on == "dev":
            return self.ctx.example_scores(prompts, "dev", label_words, rows=rows)
        n_dev = len(self.ctx.splits["dev"])
        rows = list(range(self.selection_size())) if rows is None else rows
        dev_rows = [r for r in rows if r < n_dev]
        train_rows = [r - n_dev for r in rows if r >= n_dev]
        parts = [torch.zeros(len(prompts), 0)]  # a race's round may hold no dev example
        if dev_rows:
            parts.append(self.ctx.example_scores(prompts, "dev", label_words, rows=dev_rows))
        if train_rows:
            train = self.ctx.example_scores(prompts, "train", label_words, rows=train_rows)
            if self.shown_texts is not None:
                shown = shows(prompts, [self.shown_texts[r] for r in train_rows])
                train = train.masked_fill(shown, float("nan"))
            parts.append(train)
        where = {r: j for j, r in enumerate([*dev_rows, *(n_dev + r for r in train_rows)])}
        return torch.cat(parts, 1)[:, [where[r] for r in rows]]

    def dev_scores(self, prompts: list[str]) -> list[float]:
        """The selection score of each eval prompt: its mean over `selection_scores` (the dev
        metric by default; tests script this). A fixed prompt on fixed examples always scores
        the same, so a prompt scored before in the run is not sent to the target again: an
        evaluation that puts forward an unchanged greedy prompt or the same best samples
        spends nothing on them, and the calls go to training steps instead."""
        new = [prompt for prompt in dict.fromkeys(prompts) if prompt not in self.dev_seen]
        if new:
            scores = self.selection_scores(new)  # NaN where a prompt shows the example
            self.dev_seen.update(zip(new, scores.nanmean(1).tolist(), strict=True))
            self.dev_halves.update(zip(new, split_halves(scores), strict=True))
        return [self.dev_seen[prompt] for prompt in prompts]

    def dev_cost(self, prompt: str) -> int:
        """Target calls `dev_scores` spends on `prompt`: none once it was scored in the run."""
        return 0 if prompt in self.dev_seen else self.selection_size()

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        """A pool prompt scored once on a split (`TaskContext.report`)."""
        return self.ctx.report(prompt, split, label_words)

    def summary(self) -> dict:
        """Entries the algorithm adds to (or changes in) best_prompts.json; none by default."""
        return {}

    def prompts_per_eval(self) -> int:
        """How many prompts an evaluation scores at most (for the budget)."""
        return len(self.eval_prompts())

    @abstractmethod
    def calls_per_step(self) -> int:
        """Target calls of a typical `train_step` (for the projection printed at the start)."""

    def step_calls(self, step: int) -> int:
        """Target calls `train_step(step)` spends at most (checked against the budget)."""
        return self.calls_per_step()

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    @abstractmethod
    def state(self) -> dict: ...

    @abstractmethod
    def load_state(self, state: dict) -> None: ...


def prompt_context(config: TrainConfig, ctx: TaskContext) -> str:
    """The text every token prompt starts with: the manual prompt under --continue-manual."""
    if not config.continue_manual:
        return ""
    if not ctx.task.manual_prompt:
        raise UserError(
            f"--continue-manual needs a manual prompt; task {ctx.task.name} has none "
            "(pass --manual-prompt, or drop --continue-manual)"
        )
    return ctx.task.manual_prompt
