"""Baselines that run in the trainer's harness, so they are measured exactly like the RL methods:
prompts chosen on dev only, the pool scored once on test, target calls counted by the same budget,
the same run directory (metrics.jsonl, best_prompts.json).

* ``manual``: the task's hand-written prompt.
* ``random``: `prompts_per_step` prompts of `prompt_length` tokens drawn uniformly from the
  tokens a token policy may emit (same length as the RL prompts); left open, as many as
  `--max-target-calls` buys (one without a budget), so it spends what an RL run spends. With
  `--halving R` they race on dev (`RandomRace`), so the same calls buy several times as many.
* ``in-context``: the manual prompt with `num_shots` train examples shown before the input,
  each rendered with the task template and its answer (`--demonstrations` form); with several
  counts (`--num-shots 5,10,20,40`) one prompt per count, chosen on dev like any other: how
  many pairs a target reads best differs by task (docs/RESULTS.md, "How many solved pairs").
* ``best-of-n``: draw prompts from the *untrained* instruction agent (StablePrompt's starting
  point), score every one on dev, keep the best. Set `--max-target-calls` to an RL run's budget
  and it draws N = budget / |dev| prompts: the same spend as the run it is compared with.

The first three are not trained: the trainer scores them on dev at step 0 and on test at the end.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import torch

from stableprompt.agents.instruction_agent import InstructionAgent
from stableprompt.agents.token_policy import allowed_prompt_tokens, decode_after, token_ids
from stableprompt.algorithms.base import Algorithm, prompt_context
from stableprompt.errors import UserError
from stableprompt.models.loading import load_lm, trainable_dtype
from stableprompt.selection import split_halves
from stableprompt.tasks.demonstrations import class_cap, use_demonstrations


class FixedPrompts(Algorithm):
    """manual, random and in-context: a fixed list of prompts, nothing to train."""

    trainable = False

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        if config.algo == "random" and config.demonstration_counts:
            texts, classes = self.use_demonstrations()
            self.prompts = random_demonstrations(
                texts, self.prompts_in_budget(), config.demonstration_counts, config.seed, classes
            )
            return
        if config.algo == "random":
            self.prompts = random_token_prompts(
                config.agent,
                self.prompts_in_budget(),
                config.prompt_length,
                config.seed,
                prompt_context(config, ctx),
                config.dtype,
            )
            return
        if not ctx.task.manual_prompt and config.algo in ("manual", "in-context"):
            raise UserError(f"task {ctx.task.name} has no manual prompt (add manual_prompt)")
        if config.algo == "in-context":
            self.prompts = self.in_context_prompts()
            return
        self.prompts = [ctx.task.manual_prompt]

    def in_context_prompts(self) -> list[str]:
        """One prompt per count in `--num-shots`: that many solved train pairs, the first of
        one seeded draw (so a larger count adds pairs to a smaller one's), each under the
        manual prompt, which the template then repeats before the input."""
        counts = self.config.shot_counts
        texts, _ = use_demonstrations(
            self.ctx, max(counts), balanced=False, pool="all", flag="--num-shots"
        )
        self.shown_texts = texts  # --select-on dev+train leaves out the pairs a prompt shows
        self.pair_texts = texts
        order = random.Random(self.config.seed).sample(range(len(texts)), max(counts))
        return ["".join(texts[i] for i in order[:k]) for k in counts]

    def prompts_in_budget(self) -> int:
        """random: `--prompts-per-step`, else as many prompts as `--max-target-calls` buys
        (`selection_calls`, after the calls already spent, e.g. on the label-word search, and
        the final choice of words), else one."""
        c = self.config
        if c.prompts_per_step or not c.max_target_calls:
            return c.num_prompts
        left = c.max_target_calls - self.ctx.scorer.calls - self.refit_calls()
        n = 1  # one it cannot pay for: the trainer says so
        while self.selection_calls(n + 1) <= left:
            n += 1
        return n

    def selection_calls(self, n: int) -> int:
        """Target calls of choosing among `n` prompts: each scored on the selection examples."""
        return n * self.selection_size()

    def train_step(self, step: int) -> dict:
        raise RuntimeError("fixed-prompt baselines are not trained")

    def eval_prompts(self) -> list[str]:
        return self.prompts

    def calls_per_step(self) -> int:
        return 0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class RandomRace(FixedPrompts):
    """random with `--halving R`: the drawn prompts race on the selection examples (dev, with
    `--select-on dev+train` dev and train) by successive halving (Karnin et al. 2013; Jamieson
    and Talwalkar 2016). Each step is a round: the prompts still in score the next examples of
    a seeded order (R of them in the first round, as many as all rounds before in each next
    one), and the better half by their mean so far go on; the last round reaches all of them,
    and its survivors enter the pool with their selection score. Most prompts are dropped after
    a few examples, so the same calls try several times as many prompts as scoring each on all
    of them; a prompt is never dropped on fewer examples than the first round's."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)  # draws as many prompts as the race's calls allow
        size = self.selection_size()
        self.rounds = halving_rounds(len(self.prompts), config.halving, size, config.pool_size)
        self.order = random.Random(config.seed).sample(range(size), size)  # the examples' order
        self.alive = list(range(len(self.prompts)))  # the racing prompts, by index
        self.scores: dict[int, list[float]] = {i: [] for i in self.alive}  # in `order`

    def selection_calls(self, n: int) -> int:
        c = self.config
        return sum(round_calls(halving_rounds(n, c.halving, self.selection_size(), c.pool_size)))

    def total_steps(self) -> int:
        return len(self.rounds)

    def train_step(self, step: int) -> dict:
        size, seen = self.rounds[step][1], len(self.scores[self.alive[0]])
        rows = self.order[seen:size]
        chunk = self.selection_scores([self.prompts[i] for i in self.alive], rows=rows)
        for i, row in zip(self.alive, chunk.tolist(), strict=True):
            self.scores[i] += row  # NaN where the prompt shows the (train) example
        # A prompt's mean leaves out the pairs it shows; one that showed every example so far
        # has nothing to be ranked on and goes last.
        means = {
            i: torch.tensor(self.scores[i]).nanmean().nan_to_num(-math.inf).item()
            for i in self.alive
        }
        # The step's reward figures leave such a prompt out: a -inf would reach metrics.jsonl.
        ranked = [i for i in self.alive if math.isfinite(means[i])] or self.alive
        metrics = score_metrics([self.prompts[i] for i in ranked], [means[i] for i in ranked])
        metrics |= {"racing": len(self.alive), "dev_examples": size}
        if step + 1 < len(self.rounds):  # the better half (by mean so far) goes on
            ranked = sorted(self.alive, key=lambda i: -means[i])
            self.alive = sorted(ranked[: self.rounds[step + 1][0]])
            return metrics
        # The survivors have scored every selection example: their scores as `dev_scores` gives.
        in_order = torch.tensor(self.order).argsort()
        full = torch.tensor([self.scores[i] for i in self.alive])[:, in_order]
        survivors = [self.prompts[i] for i in self.alive]
        self.dev_seen.update(zip(survivors, full.nanmean(1).tolist(), strict=True))
        self.dev_halves.update(zip(survivors, split_halves(full), strict=True))
        scores = {prompt: self.dev_seen[prompt] for prompt in survivors}
        best = max(scores, key=scores.__getitem__)
        return metrics | {"dev_scores": scores, "dev_accuracy": scores[best], "dev_prompt": best}

    def eval_prompts(self) -> list[str]:
        return []  # the rounds score on dev themselves

    def calls_per_step(self) -> int:
        return self.selection_calls(len(self.prompts)) // len(self.rounds)

    def step_calls(self, step: int) -> int:
        calls = round_calls(self.rounds)
        return calls[step] if step < len(calls) else 0  # the trainer asks after the last too

    def summary(self) -> dict:
        return {"halving": [{"prompts": k, "dev_examples": m} for k, m in self.rounds]}

    def state(self) -> dict:
        return {"alive": self.alive, "scores": {str(i): v for i, v in self.scores.items()}}

    def load_state(self, state: dict) -> None:
        self.alive = state["alive"]
        self.scores = {int(i): v for i, v in state["scores"].items()}


def score_metrics(prompts: list[str], scores: list[float]) -> dict:
    """A step's metrics over prompts scored on dev: their mean, sd and best score, and the best
    prompt (the first on a tie)."""
    values = torch.tensor(scores)
    return {
        "reward_mean": values.mean().item(),
        "reward_std": values.std().item() if len(scores) > 1 else 0.0,
        "reward_max": values.max().item(),
        "prompt": prompts[int(values.argmax())],
    }


def halving_rounds(n: int, first: int, size: int, keep: int) -> list[tuple[int, int]]:
    """(prompts racing, dev examples each has scored by the round's end) of each round of
    successive halving: `n` prompts on `first` of `size` examples, then the better half (never
    fewer than `keep`, nor more than are left) on twice as many, until all `size` are scored."""
    rounds, examples = [(n, min(first, size))], min(first, size)
    while examples < size:
        n, examples = min(n, max(keep, -(-n // 2))), min(2 * examples, size)
        rounds.append((n, examples))
    return rounds


def round_calls(rounds: list[tuple[int, int]]) -> list[int]:
    """Target calls of each round of `halving_rounds`: its prompts on its new examples."""
    before = [0] + [examples for _, examples in rounds[:-1]]
    return [k * (examples - b) for (k, examples), b in zip(rounds, before, strict=True)]


def random_token_prompts(
    agent: str, n: int, length: int, seed: int, context: str = "", dtype: str = "auto"
) -> list[str]:
    """`n` prompts of `length` tokens, uniform over the token policy's allowed tokens, each
    after `context` (--continue-manual), decoded with it as the token policy does."""
    # Only the vocabulary is read: the shared copy (the target's, when it is the same model).
    lm, tokenizer = load_lm(agent, dtype, shared=True)
    allowed = allowed_prompt_tokens(tokenizer, lm.get_output_embeddings().weight.shape[0])
    ids = allowed.nonzero().squeeze(-1)
    generator = torch.Generator().manual_seed(seed)
    picks = ids[torch.randint(len(ids), (n, length), generator=generator)]
    return decode_after(tokenizer, torch.tensor(token_ids(tokenizer, context)), picks)


def random_demonstrations(
    texts: list[str], n: int, counts: list[int], seed: int, classes: list[int] | None = None
) -> list[str]:
    """`n` prompts of distinct demonstrations (`random_demonstration_sets`), the counts in
    turn: prompt i shows counts[i % len(counts)] pairs. Each count's sets are the first ones
    `--demonstrations` with that count alone draws (the same seed), so a run over several
    counts chooses among a share of each single-count run's sets."""
    per_count = [
        random_demonstration_sets(len(texts), -(-(n - j) // len(counts)), k, seed, classes)
        for j, k in enumerate(counts)
    ]
    sets = [per_count[i % len(counts)][i // len(counts)] for i in range(n)]
    return ["".join(texts[i] for i in picked) for picked in sets]


def random_demonstration_sets(
    size: int, n: int, k: int, seed: int, classes: list[int] | None = None
) -> list[list[int]]:
    """`n` sets of `k` distinct indices into `size` candidates, drawn uniformly in random order;
    with `classes`, each pick among the candidates whose class is not yet full (`class_cap`), as
    the untrained demonstration policy draws them."""
    rng = random.Random(seed)
    if classes is None:
        return [rng.sample(range(size), k) for _ in range(n)]
    cap, sets = class_cap(k, classes), []
    for _ in range(n):
        picked: list[int] = []
        for _ in range(k):
            shown = Counter(classes[i] for i in picked)
            free = [i for i, c in enumerate(classes) if i not in picked and shown[c] < cap]
            picked.append(rng.choice(free))
        sets.append(picked)
    return sets


class BestOfN(Algorithm):
    """Sample prompts from the untrained instruction agent; each step scores its draws on dev."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.starts = self.instructions_to_rewrite()
        lm, tokenizer = load_lm(config.agent, dtype=trainable_dtype(config.dtype), shared=False)
        # LoRA starts as the identity (B = 0) and is never trained: this is the initial agent.
        self.agent = InstructionAgent(lm, tokenizer, label_words=ctx.label_words)
        self.num_prompts = config.num_prompts
        self.best: tuple[float, str] | None = None

    @torch.no_grad()
    def train_step(self, step: int) -> dict:
        c, train = self.config, self.ctx.splits["train"]
        shown = random.sample(train, min(c.shot_counts[0], len(train)))
        start = self.starts[step % len(self.starts)]  # --add-manual both: in turn
        query = self.agent.encode_query(
            self.agent.meta_prompt(shown, c.shot_counts[0], start=start)
        )
        drawn = self.agent.sample(query, self.num_prompts, c.max_new_tokens, c.agent_temperature)
        prompts = drawn.texts
        scores = self.dev_scores(prompts)
        for prompt, score in zip(prompts, scores, strict=True):
            if self.best is None or score > self.best[0]:
                self.best = (score, prompt)
        return score_metrics(prompts, scores) | {
            "dev_scores": dict(zip(prompts, scores, strict=True)),  # the trainer pools these
            "dev_accuracy": self.best[0],  # the best so far: every draw is already scored on dev
            "dev_prompt": self.best[1],
        }

    def eval_prompts(self) -> list[str]:
        return []  # each step scores its draws on dev: an evaluation would re-spend those calls

    def calls_per_step(self) -> int:
        return self.num_prompts * self.selection_size()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def state(self) -> dict:
        return {"best": list(self.best) if self.best else None}

    def load_state(self, state: dict) -> None:
        self.best = tuple(state["best"]) if state["best"] else None
