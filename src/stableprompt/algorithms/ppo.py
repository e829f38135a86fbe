"""PPO pieces for StablePrompt's Adaptive PPO (APPO).

Per-token tensors are ``[B, L]`` over the generated prompt tokens, with ``mask`` ``[B, L]`` equal to
1 for generated tokens and 0 for padding. Conventions follow TRL's PPO trainer (Ziegler et al.
2019; Schulman et al. 2017): a KL-to-reference penalty on every token, the task score added at
the last generated token, GAE, clipped policy and value losses, and an adaptive KL coefficient.

APPO's extra ingredient is an *anchor* model: a copy of the trainable weights that the agent is
periodically compared with. If the agent beats the anchor by a margin, the anchor is moved to the
agent ("update"); if it falls behind by a margin, the agent is reset to the anchor ("rollback").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

# Floating-point slack for the anchor thresholds, so that e.g. 0.55 - 0.50 (= 0.0500...04 in
# binary) still counts as "equal to 0.05" and does not fire.
_THRESHOLD_EPS = 1e-9


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


kl_penalty = kl_per_token  # TRL's name for the same quantity


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


def copy_trainable_state(module: nn.Module) -> dict[str, Tensor]:
    """Detached clones of all parameters with ``requires_grad`` (e.g. only LoRA weights)."""
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable_state(module: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (from :func:`copy_trainable_state`) back into ``module`` in place, bit-exact.

    Parameters not in ``state`` (frozen ones) are untouched; unknown names raise ``KeyError``.
    Optimizer state is not restored; the caller resets it if needed.
    """
    params = dict(module.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise KeyError(f"state has parameters not in module: {unknown[:5]}")
    for name, value in state.items():
        params[name].copy_(value)
