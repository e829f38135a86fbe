"""StablePrompt's test-time editing (`--conditioning input`): the agent writes a prompt per input.

The meta-prompt shows `num_shots` train pairs (never the input itself), then the input, and asks
for an instruction for it; with `--add-manual` it also gives the task's manual prompt to rewrite.
A step draws `prompts_per_step` train inputs and samples one prompt for each (decoded as one
batch), and each prompt's reward is the target's result on its own input alone
(`TextContext.pair_rewards`: 10 x correct + 0.1 x margin, or the generation reward). The PPO
update, the KL reference and the anchor rule are AdaptivePPO's. Anchor checks and evaluations give
every dev input its own greedy prompt and score each on its input; the pairs shown with an
evaluated input are fixed per input, so its prompt is written once per weights and cached.

A conditioned run has no single prompt. Its pool entry is the agent itself (PER_INPUT) at its best
dev score so far; the weights that scored it are kept (`best.*` in the checkpoint's
weights.safetensors, with the LoRA adapter and value head of the agent and the anchor), and the
final scoring writes a prompt for every test input with them. Every (prompt, input) pair is one
target call: a step costs `prompts_per_step` calls, an evaluation |dev| and an anchor check
2 |dev|, as `step_calls` and `prompts_per_eval` tell the budget.
"""

from __future__ import annotations

import contextlib
import math
import random
import time

from torch import Tensor

from stableprompt.agents.instruction_agent import Query, Samples, copy_trainable_state
from stableprompt.algorithms.ppo import AdaptivePPO
from stableprompt.contexts.text import TextContext
from stableprompt.errors import UserError
from stableprompt.tasks import Example

# The pool entry of a conditioned agent: "a prompt written for each input".
PER_INPUT = "<a prompt per input, written by the agent>"
WRITE_BATCH = 8  # meta-prompts decoded together when writing greedy prompts
SAMPLE_ROWS = 10  # input / prompt / prediction rows a report keeps


class ConditionedPPO(AdaptivePPO):
    """(A)PPO whose agent writes a prompt for each input; see the module docstring."""

    def __init__(self, config, ctx):
        if not isinstance(ctx, TextContext):  # checked before the agent model loads
            raise UserError(
                f"--conditioning input works on classification and generation tasks, not on "
                f"{config.task} (drop --conditioning input)"
            )
        if config.num_prompts > len(ctx.splits["train"]):
            raise UserError(
                f"--prompts-per-step {config.num_prompts} asks for more inputs per step than the "
                f"{len(ctx.splits['train'])} train examples (lower it)"
            )
        if config.anchor_on != "metric":
            raise UserError(
                f"--anchor-on {config.anchor_on} does not apply to --conditioning input, whose "
                f"anchor checks score a prompt per dev input on the metric (drop --anchor-on)"
            )
        super().__init__(config, ctx)
        self.written: dict[tuple[int, str], str] = {}  # (weights version, input) -> prompt
        self.anchor_version = 0  # the agent version whose weights the anchor holds
        self.best_dev, self.best_version = -math.inf, -1
        self.best_state: dict[str, Tensor] | None = None  # the weights of the best dev score
        self.step_inputs: list[Example] = []
        self.final: dict = {}  # the last report of the best weights, for best_prompts.json

    # meta-prompts and prompts ------------------------------------------------------------------

    def meta_prompt(self, text: str, fixed: bool = True) -> str:
        """The meta-prompt for the input `text`: train pairs other than `text`, drawn fresh
        (training) or fixed per input by the run's seed (evaluation, and so reproducible)."""
        draw = random.Random(f"{self.config.seed}:{text}").sample if fixed else random.sample
        others = [ex for ex in self.ctx.splits["train"] if ex.text != text]
        shown = draw(others, min(self.config.shot_counts[0], len(others)))
        return self.agent.meta_prompt(shown, self.config.shot_counts[0], text, self.starts[0])

    def written_prompts(
        self, examples: list[Example], weights: dict[str, Tensor] | None = None, version: int = 0
    ) -> list[str]:
        """The greedy prompt for each example by the agent (`weights` None) or by `weights` (the
        anchor's, the best), which `version` names in the cache; the missing ones are decoded
        WRITE_BATCH at a time, similar lengths together."""
        key = self.version if weights is None else version
        todo = sorted({ex.text for ex in examples if (key, ex.text) not in self.written}, key=len)
        acting = self.agent.using_weights(weights) if weights is not None else None
        with acting or contextlib.nullcontext():
            for first in range(0, len(todo), WRITE_BATCH):
                batch = todo[first : first + WRITE_BATCH]
                query = self.agent.encode_queries([self.meta_prompt(text) for text in batch])
                samples = self.agent.sample(query, len(batch), self.config.max_new_tokens, 0.0)
                self.written.update({(key, t): p for t, p in zip(batch, samples.texts)})
        return [self.written[(key, ex.text)] for ex in examples]

    # the step ----------------------------------------------------------------------------------

    def rollout(self, step: int) -> tuple[Query, Samples, list[Example]]:
        """`num_prompts` train inputs, one prompt sampled for each, and the inputs (each rewards
        its own prompt)."""
        self.step_inputs = random.sample(self.ctx.splits["train"], self.num_prompts)
        metas = [self.meta_prompt(ex.text, fixed=False) for ex in self.step_inputs]
        query = self.agent.encode_queries(metas)
        c = self.config
        samples = self.agent.sample(query, len(metas), c.max_new_tokens, c.agent_temperature)
        return query, samples, self.step_inputs

    def prompt_rewards(self, prompts: list[str], examples: list[Example]) -> Tensor:
        return self.ctx.pair_rewards(prompts, examples)

    def train_step(self, step: int) -> dict:
        metrics = super().train_step(step)
        return metrics | {"inputs": [ex.text for ex in self.step_inputs]}  # one per prompt

    def remember_sampled(self, scores: list[float], texts: list[str], empty: list[bool]) -> None:
        """Nothing: a sampled prompt served one input, it is no candidate for the whole task."""

    def dev_score(self, weights: dict[str, Tensor] | None = None, version: int = 0) -> float:
        """The metric on dev of a prompt written for each dev input (see `written_prompts`)."""
        dev = self.ctx.splits["dev"]
        return self.ctx.pair_report(self.written_prompts(dev, weights, version), dev)["accuracy"]

    def anchor_step(self) -> dict:
        agent_dev = self.dev_score()
        anchor_dev = self.dev_score(self.anchor_state, self.anchor_version)
        version = self.version
        event = self.move_anchor(agent_dev, anchor_dev)
        if event == "update":
            self.anchor_version = version
        return {"anchor_event": event, "agent_dev": agent_dev, "anchor_dev": anchor_dev}

    # evaluation, the pool and the final scoring ------------------------------------------------

    def eval_prompts(self) -> list[str]:
        return [PER_INPUT]

    def prompts_per_eval(self) -> int:
        return 1  # PER_INPUT: one prompt per dev input, one call each

    def calls_per_step(self) -> int:
        return self.num_prompts  # one (prompt, input) pair each

    def dev_scores(self, prompts: list[str]) -> list[float]:
        """PER_INPUT is the agent now, whose weights are kept while they hold the best score
        (ties keep the earlier, as the trainer's pool does); other prompts are fixed text."""
        if prompts != [PER_INPUT]:
            return super().dev_scores(prompts)
        score = self.dev_score()
        if score > self.best_dev:
            self.best_dev, self.best_version = score, self.version
            self.best_state = copy_trainable_state(self.agent)
        return [score]

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        """PER_INPUT: the best weights write a prompt for every input of `split`, each scored
        on its own input; the report adds the agent's seconds per input (generation, batched)
        and SAMPLE_ROWS input / prompt / prediction rows. Other prompts are fixed text."""
        if prompt != PER_INPUT:
            return super().report(prompt, split, label_words)
        examples = self.ctx.splits[split]
        started = time.perf_counter()
        prompts = self.written_prompts(examples, self.best_state, self.best_version)
        seconds = (time.perf_counter() - started) / len(examples)
        report = self.ctx.pair_report(prompts, examples)
        written = list(zip(examples, prompts, report.pop("predictions")))[:SAMPLE_ROWS]
        gold = self.agent.output_text  # the label word, or the first gold answer
        rows = [
            {"input": ex.text, "prompt": p, "prediction": answer.strip(), "gold": gold(ex)}
            for ex, p, answer in written
        ]
        report |= {"seconds_per_input": seconds, "rows": rows}
        self.final = {split: report["accuracy"], f"{split}_ci95": list(report["ci95"])}
        self.final |= {"n": report["n"], "seconds_per_input": seconds, "rows": rows}
        return report

    def summary(self) -> dict:
        """A conditioned run has no best prompt: best_prompts.json says so and holds the best
        weights' scores, generation time and sample rows (`stableprompt eval --agent RUN_DIR`
        reloads them from the checkpoint)."""
        agent = {"dev": self.best_dev} | self.final
        return {"conditioning": "input", "best_prompt": None, "agent": agent}

    # checkpoint --------------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        best = {f"best.{k}": v for k, v in (self.best_state or {}).items()}
        return super().tensors() | best

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_tensors(tensors)
        device = self.agent.value_head.weight.device
        best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        # Versions no other weights had (load_state restores the saved ones when resuming).
        self.anchor_version, self.best_version = self.version + 1, self.version + 2
        self.version += 3
        self.written.clear()

    def state(self) -> dict:
        versions = {"anchor_version": self.anchor_version, "best_version": self.best_version}
        return super().state() | versions | {"best_dev": self.best_dev}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.anchor_version, self.best_version = state["anchor_version"], state["best_version"]
        self.best_dev = float(state["best_dev"])
