"""Soft Q-learning (SQL) loss for prompt search, as in RLPrompt.

References:
    Deng et al. 2022, "RLPrompt: Optimizing Discrete Text Prompts with Reinforcement Learning".
    Guo et al. 2021, "Efficient (Soft) Q-Learning for Text Generation with Limited Good Data".

Setting: a batch of B prompts, each exactly T tokens long (fixed-length prompts, so there is no
padding). The trainable policy's logits ARE the Q-values, ``Q(s_t, .) = q[:, t, :]``, and the
only reward is a scalar ``R`` given after the last token (sparse reward).

With the soft value ``V(s) = logsumexp_a Q(s, a)`` and advantage ``A_t = Q(s_t, a_t) - V(s_t)``
(= log pi(a_t | s_t)), soft Bellman optimality implies *path consistency*:

    single-step ("v2"):  A_t = r_t + V'(s_{t+1}) - V'(s_t),   V'(s_T) := 0, r_t = R iff t = T-1
    multi-step  ("v3"):  sum_{k>=t} A_k = R - V'(s_t)

where V' is computed from the (slowly moving) target network. RLPrompt's default
``sql_loss_impl="v2_v3"`` averages the two squared residuals. The value function is a parameter
so that sparse SQL (PIN, :mod:`stableprompt.algorithms.sparse_sql`) reuses this code with spmax.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from stableprompt.agents.demo_policy import DemoPolicy
from stableprompt.agents.token_policy import Rollout, TokenPolicy, sample_top_k
from stableprompt.algorithms.base import Algorithm, prompt_context
from stableprompt.models.loading import load_lm
from stableprompt.tasks.demonstrations import unshown
from stableprompt.tasks.rewards import zscore

ValueFn = Callable[[Tensor], Tensor]


def soft_value(q: Tensor) -> Tensor:
    """Soft (Shannon-entropy) value ``V(s) = logsumexp_a Q(s, a)``, over the last dim."""
    return torch.logsumexp(q, dim=-1)


def mask_fill_value(dtype: torch.dtype) -> float:
    """Large *finite* negative used for disallowed actions.

    Finite (not -inf) so that ``x - x``, ``0 * x`` and sorting never produce NaN; half of
    ``finfo.min`` so that adding a few such numbers does not overflow immediately.
    """
    return torch.finfo(dtype).min / 2


def apply_mask(q: Tensor, mask: Tensor | None) -> Tensor:
    """Set Q of disallowed tokens (``mask == False``) to a large finite negative value.

    ``mask`` is a bool tensor broadcastable to ``q`` (e.g. ``[B, 1, V]`` or ``[B, T, V]``).
    Returns a new tensor; gradients flow only into the allowed entries.
    """
    if mask is None:
        return q
    return q.masked_fill(~mask.bool(), mask_fill_value(q.dtype))


def gather_actions(q: Tensor, actions: Tensor) -> Tensor:
    """``Q(s_t, a_t)``: pick the taken action's value, ``[B, T, V], [B, T] -> [B, T]``."""
    return q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def sql_loss(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    rewards: Tensor,
    value_fn: ValueFn = soft_value,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """RLPrompt "v2_v3" path-consistency loss with a terminal (sparse) reward.

    Args:
        q: ``[B, T, V]`` online Q-values (policy logits), with grad.
        q_target: ``[B, T, V]`` target-network Q-values; treated as constants (detached here).
        actions: ``[B, T]`` sampled token ids.
        rewards: ``[B]`` terminal reward per prompt (already shaped / z-scored by the caller).
        value_fn: ``[..., V] -> [...]`` value of a state; ``soft_value`` (SQL) or ``spmax`` (PIN).
        mask: optional bool mask of allowed tokens, broadcastable to ``[B, T, V]``; applied to both
            ``q`` and ``q_target`` before any value is computed.

    Returns:
        ``(loss, stats)`` where ``loss = mean_{b,t} 0.5 * (v2 + v3)`` (RLPrompt sums over time
        steps instead of averaging; that only rescales the loss by T) and ``stats`` holds floats
        ``q_mean, v_mean, a_mean, loss_v2, loss_v3``.
    """
    if q.shape != q_target.shape:
        raise ValueError(f"q.shape {tuple(q.shape)} != q_target.shape {tuple(q_target.shape)}")
    if q.ndim != 3 or actions.shape != q.shape[:2] or rewards.shape != q.shape[:1]:
        raise ValueError(
            f"expected q [B,T,V], actions [B,T], rewards [B]; got {tuple(q.shape)}, "
            f"{tuple(actions.shape)}, {tuple(rewards.shape)}"
        )
    q = apply_mask(q, mask)
    q_target = apply_mask(q_target.detach(), mask)
    rewards = rewards.to(q.dtype)

    # Online quantities: Q(s_t,a_t), V(s_t) and the advantage A_t = Q - V (= log-policy for SQL).
    q_a = gather_actions(q, actions)  # [B, T]
    v = value_fn(q)  # [B, T]
    a = q_a - v  # [B, T]

    # Target values V'(s_t) from the target network, with V'(s_T) := 0 after the last token.
    v_tgt = value_fn(q_target)  # [B, T]
    v_tgt_next = torch.cat([v_tgt[:, 1:], torch.zeros_like(v_tgt[:, :1])], dim=1)  # V'(s_{t+1})

    # Sparse reward: r_t = R at the last step, 0 elsewhere.
    r = torch.zeros_like(v_tgt)
    r[:, -1] = rewards

    # v2 (single-step): A_t  vs  r_t + V'(s_{t+1}) - V'(s_t).
    a_target_v2 = r + v_tgt_next - v_tgt
    loss_v2 = (a - a_target_v2) ** 2  # [B, T]

    # v3 (multi-step): sum_{k>=t} A_k  vs  R - V'(s_t). Gradient flows into every future A_k.
    a_future_sum = a.flip(1).cumsum(1).flip(1)  # reverse cumulative sum over time
    a_target_v3 = rewards[:, None] - v_tgt
    loss_v3 = (a_future_sum - a_target_v3) ** 2  # [B, T]

    loss = (0.5 * (loss_v2 + loss_v3)).mean()
    stats = {
        "q_mean": q_a.detach().mean().item(),
        "v_mean": v.detach().mean().item(),
        "a_mean": a.detach().mean().item(),
        "loss_v2": loss_v2.detach().mean().item(),
        "loss_v3": loss_v3.detach().mean().item(),
    }
    return loss, stats


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float = 0.001) -> None:
    """Soft target update, in place: ``target <- (1 - tau) * target + tau * online``.

    Applied to parameters only (matched by name, so both modules must share an architecture).
    ``tau = 1`` copies the online network; RLPrompt uses ``tau = 0.001`` every step.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    online_params = dict(online.named_parameters())
    for name, p_target in target.named_parameters():
        p_target.lerp_(online_params[name].to(p_target.dtype), tau)


# ------------------------------------------------------------------------ the RLPrompt algorithm


class SoftQLearning(Algorithm):
    """RLPrompt: sample prompts from the token policy, reward them with the target, SQL update.

    Subclasses change three hooks (PIN: `sparse_sql.SparseSoftQLearning`): how actions are
    sampled, which tokens are allowed, and the loss.
    """

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        lm, tokenizer = load_lm(config.agent, dtype=config.dtype, shared=True)
        if config.demonstration_counts:  # a prompt is K train examples (tasks/demonstrations.py)
            texts, classes = self.use_demonstrations()
            self.policy = DemoPolicy(
                lm, tokenizer, texts, config.demonstration_counts[0], config.mlp_hidden, classes
            )
        else:
            context = prompt_context(config, ctx)  # learned tokens may continue the user's prompt
            self.policy = TokenPolicy(
                lm, tokenizer, config.prompt_length, config.mlp_hidden, context=context
            )
        self.target_mlp = copy.deepcopy(self.policy.mlp).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.policy.mlp.parameters(), lr=config.lr)
        self.replay = ReplayBuffer(config.replay_size)
        self.num_prompts = config.num_prompts  # 16 by default: RLPrompt's batch size
        # (step, train reward, prompt) of the samples of the last eval_every steps: an evaluation
        # scores the best of them on dev beside the greedy prompt
        self.recent: list[tuple[int, float, str]] = []

    # hooks -------------------------------------------------------------------------------------

    def choose(self, q: Tensor, base_logits: Tensor) -> Tensor:
        return sample_top_k(q, self.config.top_k)

    def greedy(self, q: Tensor, base_logits: Tensor) -> Tensor:
        return q.argmax(-1)

    def loss(self, q: Tensor, q_target: Tensor, rollout: Rollout, rewards: Tensor):
        return sql_loss(q, q_target, rollout.actions, rewards, mask=self.policy.mask(rollout))

    # the step ----------------------------------------------------------------------------------

    def update(self, rollout: Rollout, rewards: Tensor) -> dict:
        q = self.policy.q_values(rollout.hidden)
        with torch.no_grad():
            q_target = self.policy.q_values(rollout.hidden, self.target_mlp)
        loss, stats = self.loss(q, q_target, rollout, rewards)
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(
            self.policy.mlp.parameters(), self.config.max_grad_norm
        )
        self.optimizer.step()
        polyak_update(self.target_mlp, self.policy.mlp, self.config.target_update_rate)
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), **stats}

    def train_step(self, step: int) -> dict:
        c = self.config
        started = time.perf_counter()
        rollout = self.policy.rollout(self.num_prompts, self.choose)
        prompts = self.policy.decode(rollout.actions)
        sampled = time.perf_counter()
        examples = self.train_examples()
        keep = None  # a prompt is not rewarded on the train examples it shows
        if c.demonstration_counts and c.demonstrations_from == "all":
            keep = unshown(rollout.actions, examples, self.ctx.splits["train"])
        raw = self.ctx.rewards(prompts, examples, c.classification_reward, keep)
        rewarded = time.perf_counter()
        metrics = self.update(rollout, zscore(raw) * c.reward_scale)
        if c.replay:  # off-policy: replay stored prompts with their stored rewards
            self.replay.add(rollout.actions, raw)
            actions, old = self.replay.sample(c.replay_batch)
            replay_metrics = self.update(self.policy.replay(actions), zscore(old) * c.reward_scale)
            metrics["replay_loss"] = replay_metrics["loss"]
        metrics |= {  # where the step's time went (benchmarks/step_time.py prints these)
            "seconds_rollout": sampled - started,
            "seconds_reward": rewarded - sampled,
            "seconds_update": time.perf_counter() - rewarded,
        }
        window = step - self.config.eval_every
        self.recent = [e for e in self.recent if e[0] > window]
        self.recent += [(step, r, p) for r, p in zip(raw.tolist(), prompts)]
        best = int(raw.argmax())
        return {
            "reward_mean": raw.mean().item(),
            "reward_std": raw.std().item() if len(raw) > 1 else 0.0,
            "reward_max": raw[best].item(),
            "prompt": prompts[best],
            **metrics,
        }

    def eval_prompts(self) -> list[str]:
        """The greedy prompt, then the `eval_samples` best distinct prompts sampled since the
        last evaluation by train reward (early on the greedy prompt barely moves, while the
        samples already find prompts the target likes)."""
        greedy = self.policy.decode(self.policy.rollout(1, self.greedy).actions)
        ranked = sorted(self.recent, key=lambda e: -e[1])  # stable: ties keep the earlier
        sampled = list(dict.fromkeys(p for _, _, p in ranked if p))[: self.config.eval_samples]
        return greedy + sampled

    def prompts_per_eval(self) -> int:
        return 1 + self.config.eval_samples

    def calls_per_step(self) -> int:
        return self.num_prompts * self.examples_per_step()

    # checkpoint --------------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        out = {f"mlp.{k}": v for k, v in self.policy.mlp.state_dict().items()}
        out |= {f"target_mlp.{k}": v for k, v in self.target_mlp.state_dict().items()}
        return out

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for prefix, module in (("mlp.", self.policy.mlp), ("target_mlp.", self.target_mlp)):
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state(),
            "recent": [list(e) for e in self.recent],
        }

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state(state["replay"])
        self.recent = [(int(s), float(r), str(p)) for s, r, p in state.get("recent", [])]


class ReplayBuffer:
    """FIFO buffer of (prompt token ids, raw reward) for off-policy updates."""

    def __init__(self, size: int):
        self.size = size
        self.actions: Tensor | None = None
        self.rewards: Tensor | None = None

    def add(self, actions: Tensor, rewards: Tensor) -> None:
        actions, rewards = actions.cpu(), rewards.cpu().float()
        if self.actions is None:
            self.actions, self.rewards = actions, rewards
        else:
            self.actions = torch.cat([self.actions, actions])[-self.size :]
            self.rewards = torch.cat([self.rewards, rewards])[-self.size :]

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.rewards), (n,))
        return self.actions[idx], self.rewards[idx]

    def state(self) -> dict:
        return {"actions": self.actions, "rewards": self.rewards}

    def load_state(self, state: dict) -> None:
        self.actions, self.rewards = state["actions"], state["rewards"]
