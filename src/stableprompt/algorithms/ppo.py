"""PPO pieces for StablePrompt's Adaptive PPO (APPO).

Per-token tensors are ``[B, L]`` over the generated prompt tokens, with ``mask`` ``[B, L]`` equal to
1 for generated tokens and 0 for padding. Conventions follow TRL's PPO trainer (Ziegler et al.
2019; Schulman et al. 2017): a KL-to-reference penalty on every token, the task score added at
the last generated token, GAE, clipped policy and value losses, and an adaptive KL coefficient.
One departure (`--value-init first-batch`, the default): the value head starts at the first
batch's mean score instead of near 0, as its clipped loss would take most of a short run to get
there while its gradient, through the LoRA weights the policy shares, drove the updates.

APPO's extra ingredient is an *anchor* model: a copy of the trainable weights that the agent is
periodically compared with. If the agent beats the anchor by a margin, the anchor is moved to the
agent ("update"); if it falls behind by a margin, the agent is reset to the anchor ("rollback").
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Literal

import torch
from torch import Tensor, nn

from stableprompt.agents.instruction_agent import (
    InstructionAgent,
    Query,
    Samples,
    copy_trainable_state,
    load_trainable_state,
)
from stableprompt.algorithms.base import Algorithm
from stableprompt.contexts.text import ANSWER_LOGPROB_FLOOR
from stableprompt.errors import UserError
from stableprompt.models.loading import load_lm, trainable_dtype
from stableprompt.tasks import Example

# Floating-point slack for the anchor thresholds, so that e.g. 0.55 - 0.50 (= 0.0500...04 in
# binary) still counts as "equal to 0.05" and does not fire.
_THRESHOLD_EPS = 1e-9
# The reward of a sample that wrote no text: below anything a real prompt scores (StablePrompt's
# reward is >= -c_s, task metrics and likelihoods are >= 0), so the agent cannot win by saying
# nothing and falling back to a default prompt. See `empty_prompt_reward`.
EMPTY_PROMPT_REWARD = -1.0
# Each evaluation scores on dev the agent's greedy prompt and the run's best sampled prompts so
# far by train reward (the target computes each (prompt, dev input) once: scores are cached).
SAMPLED_PER_EVAL = 3


def empty_prompt_reward(ctx) -> float:
    """EMPTY_PROMPT_REWARD, or one below the floor of mean answer log-likelihoods (which are
    negative) when the task's train reward is `loglikelihood`."""
    if ctx.generation and ctx.generation_reward == "loglikelihood":
        return ANSWER_LOGPROB_FLOOR - 1.0
    return EMPTY_PROMPT_REWARD


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1 (all of them, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over masked entries (Bessel-corrected by default, as in TRL)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(
                "masked_var needs at least 2 unmasked entries for the unbiased estimate"
            )
        var = var * n / (n - 1)
    return var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise to zero mean / unit variance using statistics of the masked entries only.

    With ``shift_mean=False`` the mean is added back (only the scale is normalised).
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL estimate ``log pi(a) - log pi_ref(a)`` ("k1" in TRL).

    Unbiased for KL(pi || pi_ref) when ``a ~ pi``; a single sample may be negative.
    """
    return logprobs - ref_logprobs


def token_rewards(
    score: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
) -> Tensor:
    """Per-token rewards ``-kl_coef * kl_t``, plus ``score`` at each row's last generated token.

    Args:
        score: ``[B]`` task reward of each generated prompt.
        logprobs, ref_logprobs: ``[B, L]`` log-probs of the generated tokens under the policy and
            the frozen reference model.
        mask: ``[B, L]`` 1 for generated tokens; every row needs at least one.
        kl_coef: KL penalty coefficient (e.g. ``AdaptiveKLController.value``).

    Returns:
        ``[B, L]`` rewards, 0 at padded positions.
    """
    mask = mask.to(logprobs.dtype)
    if (mask.sum(1) == 0).any():
        raise ValueError("every row of mask needs at least one generated token")
    rewards = -kl_coef * kl_per_token(logprobs, ref_logprobs)
    # Index of the last 1 in each row: argmax returns the first max of the flipped row.
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += score.to(rewards.dtype)
    return rewards * mask


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over masked tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    scanned right to left. Values and rewards at padded positions (past the end) count as 0, so
    the bootstrap after the last generated token is 0 (the episode ends there).

    Returns:
        ``(advantages, returns)``, both ``[B, L]``, with ``returns = advantages + values``;
        0 at padded positions. Whiten advantages afterwards with :func:`masked_whiten` if wanted.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask
    returns = (advantages + values) * mask
    return advantages, returns


def ppo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range: float = 0.2,
    clip_range_value: float = 0.2,
    vf_coef: float = 0.1,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped PPO objective (policy + value), averaged over masked tokens.

    ``advantages``, ``old_logprobs``, ``old_values`` and ``returns`` come from the rollout and are
    treated as constants (detached here).

    Returns:
        ``(loss, stats)`` with ``loss = pg_loss + vf_coef * vf_loss`` and float stats
        ``pg_loss, vf_loss, clipfrac, vf_clipfrac, approx_kl``.
    """
    advantages, old_logprobs = advantages.detach(), old_logprobs.detach()
    old_values, returns = old_values.detach(), returns.detach()

    # Policy loss: pessimistic (max of negatives) of the unclipped and clipped surrogate.
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)

    # Value loss: don't let the value head move more than clip_range_value from its rollout value.
    values_clipped = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    vf_losses = (values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), mask)

    loss = pg_loss + vf_coef * vf_loss

    with torch.no_grad():
        stats = {
            "pg_loss": pg_loss.item(),
            "vf_loss": vf_loss.item(),
            # Fraction of tokens where the clipped term was the active (larger) one.
            "clipfrac": masked_mean((pg_losses_clipped > pg_losses).to(ratio.dtype), mask).item(),
            "vf_clipfrac": masked_mean(
                (vf_losses_clipped > vf_losses).to(ratio.dtype), mask
            ).item(),
            # 0.5 E[(log r)^2]: second-order estimate of KL(old || new), as in TRL.
            "approx_kl": (0.5 * masked_mean(log_ratio**2, mask)).item(),
        }
    return loss, stats


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019).

    After each batch: ``e = clip(kl / target - 1, -0.2, 0.2)`` and
    ``value *= 1 + e * n_steps / horizon``, so the coefficient grows when the observed KL exceeds
    the target and shrinks when it is below.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """Constant KL coefficient; ``update`` is a no-op (same interface as the adaptive one)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


AnchorDecision = Literal["update", "rollback", "keep"]


def anchor_decision(
    agent_score: float,
    anchor_score: float,
    update_threshold: float = 0.05,
    rollback_threshold: float = 0.1,
) -> AnchorDecision:
    """APPO anchor rule.

    * ``"update"``   if ``agent_score - anchor_score > update_threshold`` (agent clearly better:
      move the anchor to the agent),
    * ``"rollback"`` if ``anchor_score - agent_score > rollback_threshold`` (agent clearly worse:
      restore the agent from the anchor),
    * ``"keep"`` otherwise.

    Both comparisons are strict: a difference exactly equal to a threshold keeps. Differences
    within 1e-9 of a threshold count as equal, so float noise (0.55 - 0.5) does not fire.
    """
    diff = agent_score - anchor_score
    if diff > update_threshold + _THRESHOLD_EPS:
        return "update"
    if -diff > rollback_threshold + _THRESHOLD_EPS:
        return "rollback"
    return "keep"


# --------------------------------------------------------------------- the StablePrompt algorithm


class AdaptivePPO(Algorithm):
    """StablePrompt: an instruction-writing agent trained with (Adaptive) PPO, CleanRL style.

    One step: draw `num_shots` fresh train pairs, build ONE meta-prompt (shared by the step's
    samples: its context is encoded once, and the prompts of a step compete on the same context),
    sample `prompts_per_step` prompts (default 4), reward each with StablePrompt's reward on
    `train_examples` train examples, then PPO: per-token KL penalty to the reference, the reward
    at the last token, GAE (`gamma`, `gae_lambda`), whitened advantages, `ppo_epochs` full-batch
    epochs of the clipped policy + value loss, AdamW, gradient clipping. LoRA dropout is active
    in the update passes only (rollout, old and reference log-probs are computed in eval mode).

    Reference of the KL penalty (`reference`):
      * ``anchor``: the anchor's weights (APPO, the default of ``--algo appo``);
      * ``initial``: the frozen initial agent (adapter off), RLHF-style;
      * ``previous``: the agent as it was before the last update (the initial one at step 0).
    ``--algo ppo`` is plain PPO: no anchor comparisons, and ``reference: anchor`` (the config's
    default) means ``initial`` there. ``--algo appo`` always runs the anchor comparisons, whatever
    the reference, so the ablations only change the KL term.

    Anchor (APPO): a real copy of the trainable weights (LoRA + value head), initially the
    agent's. Every `anchor_every` steps the agent and the anchor each write a greedy prompt for
    the fixed evaluation meta-prompt, both are scored on dev (the anchor's once per anchor, the
    agent's unless it is the anchor's text: a keep for free), and `anchor_decision` either moves
    the anchor to the agent ("update"), restores the agent from the anchor bit for bit and resets
    the optimizer ("rollback"), or does nothing ("keep"). With `--anchor-on samples` no greedy
    prompt is written or scored: the agent's score is the mean train reward of the prompts it
    sampled since the last check, the anchor's the same mean from the window that made it the
    anchor (the first window's for the initial agent), so a check costs no target calls.

    Evaluations score on dev the greedy prompt and the SAMPLED_PER_EVAL best sampled prompts of
    the run by train reward; the best of them by dev enter the trainer's pool.
    """

    reward_kind = "appo"

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        if config.reference not in ("anchor", "initial", "previous"):
            raise UserError(
                f"unknown reference {config.reference!r} (use anchor, initial or previous)"
            )
        self.use_anchor = config.algo == "appo"
        self.reference = config.reference
        if config.algo == "ppo" and self.reference == "anchor":
            self.reference = "initial"
        self.num_prompts = config.num_prompts
        self.starts = self.instructions_to_rewrite()
        self.empty_reward = empty_prompt_reward(ctx)
        # Own copy (shared=False): LoRA is injected into the modules in place.
        lm, tokenizer = load_lm(config.agent, dtype=trainable_dtype(config.dtype), shared=False)
        self.agent = InstructionAgent(
            lm,
            tokenizer,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            label_words=ctx.label_words,
        )
        self.optimizer = self.make_optimizer()
        self.kl_ctl = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.kl_coef)
        )
        initial = copy_trainable_state(self.agent)
        self.anchor_state = initial if self.use_anchor else None
        self.previous_state = initial if self.reference == "previous" else None
        # Fixed evaluation meta-prompt: its own RNG, so evaluating never shifts the training draws.
        shown = random.Random(config.seed).sample(
            ctx.splits["train"], min(config.shot_counts[0], len(ctx.splits["train"]))
        )
        self.eval_queries = [  # one per meta-prompt (two with --add-manual both)
            self.agent.encode_query(
                self.agent.meta_prompt(shown, config.shot_counts[0], start=start)
            )
            for start in self.starts
        ]
        self.eval_query = self.eval_queries[0]
        # Greedy prompts cost a generation each: keep the agent's per weight version (bumped by
        # every optimizer step, rollback and load) and the anchor's until the anchor moves.
        self.version = 0
        # The agent version the KL reference's weights equal (initially all references are the
        # initial agent: LoRA's B starts at zero, so adapter on and off agree exactly).
        self.reference_version = 0
        self.greedy_cache: dict[int, tuple[int, str]] = {}  # query index -> (version, prompt)
        self.anchor_scores: dict[str, float] | None = None  # its greedy prompts' scores
        # --anchor-on samples: train rewards sampled since the last check, and the anchor's mean
        self.window: list[float] = []
        self.anchor_sampled: float | None = None
        self.top_sampled: list[tuple[float, str]] = []  # (train reward, prompt), best first
        # --add-manual both: which meta-prompt wrote each prompt put forward for dev, and the
        # best dev score of each meta-prompt's prompts so far (`meta_prompt_index`)
        self.written_by: dict[str, int] = {}
        self.best_dev_by_start = [float("-inf")] * len(self.starts)
        self.start_index = 0  # the meta-prompt of the step being taken

    def make_optimizer(self) -> torch.optim.Optimizer:
        # No weight decay: the KL penalty is the regulariser.
        return torch.optim.AdamW(
            self.agent.trainable_parameters(), lr=self.config.lr, weight_decay=0.0
        )

    def reference_weights(self) -> dict[str, Tensor] | None:
        """Weights of the KL reference (None = the initial agent, via the disabled adapter)."""
        return {"anchor": self.anchor_state, "initial": None, "previous": self.previous_state}[
            self.reference
        ]

    # the step ----------------------------------------------------------------------------------

    def meta_prompt_index(self, step: int) -> int:
        """Which meta-prompt step `step` samples from. With --add-manual both the two take turns
        until the first evaluation after step 0, and after it while they are level; otherwise
        the one that wrote the best prompt on dev so far takes the step. Taking turns for the
        whole run gave each agent half the edits, and the run came out behind `--add-manual`
        alone in four of six runs and never ahead (docs/RESULTS.md)."""
        if len(self.starts) == 1:
            return 0
        best = self.best_dev_by_start
        if step < self.config.eval_every or best[0] == best[1]:
            return step % 2
        return int(best[1] > best[0])

    def dev_scores(self, prompts: list[str]) -> list[float]:
        """`Algorithm.dev_scores`, crediting each score to the meta-prompt that wrote the
        prompt (for `meta_prompt_index`)."""
        scores = super().dev_scores(prompts)
        for prompt, score in zip(prompts, scores):
            index = self.written_by.get(prompt)
            if index is not None:
                self.best_dev_by_start[index] = max(self.best_dev_by_start[index], score)
        return scores

    def rollout(self, step: int) -> tuple[Query, Samples, list[Example]]:
        """One meta-prompt (`meta_prompt_index`) of fresh train pairs, `num_prompts` prompts
        sampled for it (eval mode), and the train examples that reward them."""
        c, train = self.config, self.ctx.splits["train"]
        shown = random.sample(train, min(c.shot_counts[0], len(train)))
        self.start_index = self.meta_prompt_index(step)
        start = self.starts[self.start_index]
        query = self.agent.encode_query(
            self.agent.meta_prompt(shown, c.shot_counts[0], start=start)
        )
        samples = self.agent.sample(query, self.num_prompts, c.max_new_tokens, c.agent_temperature)
        return query, samples, self.train_examples()

    def prompt_rewards(self, prompts: list[str], examples: list[Example]) -> Tensor:
        """The target's reward of each prompt on all of `examples` (StablePrompt's, for
        classification: 10 x accuracy + 0.1 x margin)."""
        return self.ctx.rewards(prompts, examples, self.reward_kind)

    def train_step(self, step: int) -> dict:
        c, agent = self.config, self.agent

        # 1. Rollout: prompts sampled from the agent.
        started = time.perf_counter()
        query, samples, examples = self.rollout(step)
        response, mask = samples.response, samples.mask

        # 2. Reward from the frozen target, per prompt.
        sampled = time.perf_counter()
        scores = self.prompt_rewards(samples.texts, examples)
        rewarded = time.perf_counter()
        empty = torch.tensor(samples.empty)
        scores = torch.where(empty, self.empty_reward, scores).to(response.device)

        # 3. Old log-probs and values (the behaviour policy), and the reference's log-probs: the
        # same tensor while the reference still has the agent's weights. In fp32 the decoding
        # pass gives what a full forward gives (to ~1e-5); in bf16 they differ by up to 0.2 nats,
        # more than the clip range, so there the update's own forward computes them.
        if agent.head.weight.dtype == torch.float32:
            old_logprobs, old_values = samples.logprobs, samples.values
        else:
            with torch.no_grad():
                old_logprobs, old_values = agent.forward_logprobs_values(
                    query, response, c.agent_temperature, mask=mask
                )
        if self.version == self.reference_version:
            ref_logprobs = old_logprobs
        else:
            with torch.no_grad(), agent.using_weights(self.reference_weights()):
                ref_logprobs, _ = agent.forward_logprobs_values(
                    query, response, c.agent_temperature, mask=mask
                )
        if step == 0 and c.value_init == "first-batch":
            old_values = self.start_values_at(
                scores.mean().item() - masked_mean(old_values, mask).item(), old_values
            )
        kl_coef = self.kl_ctl.value
        rewards = token_rewards(scores, old_logprobs, ref_logprobs, mask, kl_coef)
        kl = (kl_per_token(old_logprobs, ref_logprobs) * mask).sum(1).mean().item()

        # 4. GAE on the per-token rewards, then whiten the advantages over the batch's tokens.
        advantages, returns = gae(rewards, old_values, mask, c.gamma, c.gae_lambda)
        if mask.sum() > 1:
            advantages = masked_whiten(advantages, mask)

        # 5. PPO epochs: clipped policy loss + vf_coef * clipped value loss, full batch. With the
        # mask only the generated tokens run (the rows packed into one sequence, no padding).
        if self.reference == "previous":
            self.previous_state = copy_trainable_state(agent)  # the reference of the next step
        agent.train()  # LoRA dropout on
        epoch_stats = []
        for _ in range(c.ppo_epochs):
            logprobs, values = agent.forward_logprobs_values(
                query, response, c.agent_temperature, mask=mask
            )
            loss, stats = ppo_loss(
                logprobs,
                old_logprobs,
                advantages,
                values,
                old_values,
                returns,
                mask,
                c.clip_range,
                c.clip_range_value,
                c.vf_coef,
            )
            self.optimizer.zero_grad()
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(agent.trainable_parameters(), c.max_grad_norm)
            self.optimizer.step()
            self.version += 1
            epoch_stats.append({**stats, "grad_norm": grad_norm.item()})
        agent.eval()
        self.kl_ctl.update(kl, self.num_prompts)

        self.remember_sampled(scores.tolist(), samples.texts, samples.empty)
        if self.use_anchor:
            self.window += scores.tolist()
        best = int(scores.argmax())
        metrics = {
            "reward_mean": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "reward_max": scores[best].item(),
            "prompt": samples.texts[best],
            "prompts": samples.texts,
            **({"meta_prompt": self.start_index} if len(self.starts) > 1 else {}),
            "kl": kl,
            "kl_coef": kl_coef,
            "response_len": mask.sum(1).float().mean().item(),
            "value_mean": masked_mean(old_values, mask).item(),
            # where the step's time goes: agent decoding, target scoring, PPO update
            "seconds_rollout": sampled - started,
            "seconds_reward": rewarded - sampled,
            "seconds_update": time.perf_counter() - rewarded,
            # averaged over the epochs
            **{k: sum(s[k] for s in epoch_stats) / len(epoch_stats) for k in epoch_stats[0]},
        }

        # 6. Anchor (APPO): compare on dev every anchor_every steps; update, roll back or keep.
        if self.anchor_due(step):
            metrics.update(self.anchor_step())
        return metrics

    @torch.no_grad()
    def start_values_at(self, shift: float, old_values: Tensor) -> Tensor:
        """--value-init first-batch: move the value head's bias (the agent's, and the stored
        anchor's and previous agent's, which a rollback or the KL reference would restore) by
        `shift`; the rollout's values move with it."""
        self.agent.value_head.bias += shift
        stored = (self.anchor_state, self.previous_state)
        for state in {id(s): s for s in stored if s is not None}.values():  # may be one dict
            state["value_head.bias"] += shift
        return old_values + shift

    def anchor_due(self, step: int) -> bool:
        """Whether `train_step(step)` ends with an anchor comparison (at most 2 prompts on dev:
        the anchor's is scored once per anchor, the agent's only when it differs)."""
        return self.use_anchor and (step + 1) % self.config.anchor_every == 0

    def anchor_step(self) -> dict:
        if self.config.anchor_on == "samples":
            return self.anchor_step_on_samples()
        if self.anchor_scores is None:  # cached: the anchor's weights change only on an update
            self.anchor_scores = self.greedy_scores(self.anchor_state, {})
        anchor = self.anchor_scores
        # The scorer is deterministic: the same text scores the same, so an agent that still
        # writes the anchor's prompts is a keep that costs no target calls.
        agent = self.greedy_scores(None, anchor)
        agent_dev, anchor_dev = max(agent.values()), max(anchor.values())
        event = self.move_anchor(agent_dev, anchor_dev)
        if event == "update":
            self.anchor_scores = agent
        return {
            "anchor_event": event,
            "agent_dev": agent_dev,
            "anchor_dev": anchor_dev,
            "anchor_prompt": max(anchor, key=anchor.get),
        }

    def greedy_scores(
        self, weights: dict[str, Tensor] | None, known: dict[str, float]
    ) -> dict[str, float]:
        """The `anchor_score` of each greedy prompt (one per meta-prompt) of the agent (None)
        or of `weights`; the policy's score is the best of them. A text in `known` is not
        scored again."""
        indices = range(len(self.eval_queries))
        prompts = dict.fromkeys(self.greedy_prompt(weights, i) for i in indices)
        return {p: known[p] if p in known else self.anchor_score(p) for p in prompts}

    def anchor_step_on_samples(self) -> dict:
        """Compare the policies by what they sampled, not by one greedy prompt each: a greedy
        prompt can score far from the policy's samples (on ii:sentiment an untrained agent's
        greedy prompt scored -5.9 where its samples averaged -11.8), and rollbacks to it then
        undo a policy whose samples improved."""
        agent_mean = sum(self.window) / len(self.window)
        self.window = []
        if self.anchor_sampled is None:  # the initial anchor: the first window estimates it
            self.anchor_sampled = agent_mean
        anchor_mean = self.anchor_sampled
        event = self.move_anchor(agent_mean, anchor_mean)
        if event == "update":
            self.anchor_sampled = agent_mean
        return {"anchor_event": event, "agent_dev": agent_mean, "anchor_dev": anchor_mean}

    def anchor_score(self, prompt: str) -> float:
        """What agent and anchor are compared on (`--anchor-on`): the dev metric (StablePrompt's
        rule), or the train reward on dev, which still separates two prompts that both score 0
        (a small target that never writes the exact answer)."""
        if self.config.anchor_on == "reward":
            return self.prompt_rewards([prompt], self.ctx.splits["dev"]).item()
        return self.dev_scores([prompt])[0]

    def move_anchor(self, agent_dev: float, anchor_dev: float) -> AnchorDecision:
        """`anchor_decision` on the two dev scores, applied: the anchor takes the agent's weights,
        or the agent is restored from the anchor with a fresh optimizer, or nothing changes."""
        c, agent = self.config, self.agent
        event = anchor_decision(
            agent_dev, anchor_dev, c.anchor_update_threshold, c.anchor_rollback_threshold
        )
        if event == "update":
            self.anchor_state = copy_trainable_state(agent)
        elif event == "rollback":
            load_trainable_state(agent, self.anchor_state)
            self.optimizer = self.make_optimizer()  # Adam moments belong to the discarded weights
            self.version += 1
        if event != "keep" and self.reference == "anchor":
            self.reference_version = self.version
        return event

    def greedy_prompt(self, weights: dict[str, Tensor] | None, index: int = 0) -> str:
        """The greedy prompt for evaluation meta-prompt `index`: the agent's own (None; cached
        until its weights change) or under `weights` (e.g. the anchor)."""
        cached = self.greedy_cache.get(index)
        if weights is None and cached is not None and cached[0] == self.version:
            return cached[1]
        context = (
            self.agent.using_weights(weights) if weights is not None else contextlib.nullcontext()
        )
        with context:
            query, limit = self.eval_queries[index], self.config.max_new_tokens
            prompt = self.agent.sample(query, 1, limit, temperature=0).texts[0]
        if weights is None:
            self.greedy_cache[index] = (self.version, prompt)
        return prompt

    def remember_sampled(self, scores: list[float], texts: list[str], empty: list[bool]) -> None:
        """Keep the SAMPLED_PER_EVAL distinct written prompts with the best train reward (and
        which meta-prompt the step's were sampled from)."""
        known = {prompt for _, prompt in self.top_sampled}
        for score, text, is_empty in zip(scores, texts, empty):
            if not is_empty and text not in known:
                self.top_sampled.append((score, text))
                if len(self.starts) > 1:  # only --add-manual both asks who wrote it
                    self.written_by.setdefault(text, self.start_index)
                known.add(text)
        self.top_sampled.sort(key=lambda entry: -entry[0])  # stable: ties keep the earlier
        del self.top_sampled[SAMPLED_PER_EVAL:]

    def eval_prompts(self) -> list[str]:
        greedy = [self.greedy_prompt(None, i) for i in range(len(self.eval_queries))]
        if len(greedy) > 1:
            for index, prompt in enumerate(greedy):
                self.written_by.setdefault(prompt, index)
        return greedy + [prompt for _, prompt in self.top_sampled]

    def prompts_per_eval(self) -> int:
        return len(self.eval_queries) + SAMPLED_PER_EVAL

    def calls_per_step(self) -> int:
        """The rollout's rewards; anchor steps add their dev scoring (see `step_calls`)."""
        return self.num_prompts * self.examples_per_step()

    def step_calls(self, step: int) -> int:
        scored = self.anchor_due(step) and self.config.anchor_on != "samples"
        anchor = 2 * len(self.eval_queries) * self.selection_size() if scored else 0
        return self.calls_per_step() + anchor

    # checkpoint --------------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        out = {f"agent.{k}": v for k, v in copy_trainable_state(self.agent).items()}
        for prefix, state in (("anchor.", self.anchor_state), ("previous.", self.previous_state)):
            out |= {prefix + k: v for k, v in (state or {}).items()}
        return out

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        def part(prefix: str) -> dict[str, Tensor]:
            device = self.agent.value_head.weight.device
            return {
                k[len(prefix) :]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)
            }

        load_trainable_state(self.agent, part("agent."))
        self.version += 1
        self.anchor_scores = None
        if self.anchor_state is not None:
            self.anchor_state = part("anchor.")
        if self.previous_state is not None:
            self.previous_state = part("previous.")

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl_ctl.value,
            "version": self.version,
            "reference_version": self.reference_version,
            "top_sampled": [[score, prompt] for score, prompt in self.top_sampled],
            # so that a resumed run does not spend calls re-scoring the anchor's prompts
            "anchor_scores": self.anchor_scores,
            "window": self.window,
            "anchor_sampled": self.anchor_sampled,
            "written_by": self.written_by,
            "best_dev_by_start": self.best_dev_by_start,
        }

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.value = float(state["kl_coef"])
        # Called after load_tensors; a resumed run takes the same shortcuts as an unbroken one.
        self.version = int(state.get("version", self.version))
        self.reference_version = int(state.get("reference_version", -1))
        self.greedy_cache = {}
        self.top_sampled = [(float(score), str(p)) for score, p in state.get("top_sampled", [])]
        self.anchor_scores = state.get("anchor_scores")
        if state.get("anchor_prompt") is not None:  # older checkpoints: one prompt
            self.anchor_scores = {state["anchor_prompt"]: float(state["anchor_dev"])}
        self.window = [float(r) for r in state.get("window", [])]
        self.anchor_sampled = state.get("anchor_sampled")
        self.written_by = {str(p): int(i) for p, i in state.get("written_by", {}).items()}
        self.best_dev_by_start = [
            float(b) for b in state.get("best_dev_by_start", self.best_dev_by_start)
        ]
