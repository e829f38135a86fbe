"""Sparse soft Q-learning with Tsallis entropy, as in PIN (Choi et al. 2024).

PIN replaces SQL's Shannon-entropy regulariser by the Tsallis (q=2) entropy
``1/2 (1 - ||p||^2)``. The optimal policy becomes ``sparsemax(Q)`` (exact zeros outside a small
support) and the soft value becomes

    spmax(Q) = max_{p in simplex} <p, Q> + 1/2 (1 - ||p||^2)
             = 1/2 sum_{j <= K} (Q_(j)^2 - tau^2) + 1/2,

where ``Q_(1) >= Q_(2) >= ...`` are the sorted values, ``K`` the support size and ``tau`` the
sparsemax threshold. PIN additionally restricts actions to the frozen LM's top-k next tokens
(``topk_mask``), which is applied to both online and target Q before anything else.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stableprompt.agents.token_policy import Rollout
from stableprompt.algorithms.sql import (
    SoftQLearning,
    apply_mask,
    gather_actions,
    mask_fill_value,
    sql_loss,
)
from stableprompt.models.sampling import sample_index

__all__ = [
    "apply_mask",
    "mc_loss",
    "sample_sparsemax",
    "sparse_sql_loss",
    "sparsemax",
    "spmax",
    "topk_mask",
]


def _sparsemax_parts(z: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted values, support indicator (in sorted order) and threshold tau (keepdim)."""
    # -inf (or any huge negative) -> finite, so k * z_(k) and sorting never create NaN.
    z = z.clamp(min=mask_fill_value(z.dtype))
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    cumsum = z_sorted.cumsum(dim)
    shape = [1] * z.ndim
    shape[dim] = z.shape[dim]
    k = torch.arange(1, z.shape[dim] + 1, dtype=z.dtype, device=z.device).view(shape)
    # Sorted index k is in the support iff 1 + k z_(k) > sum_{j<=k} z_(j) (a prefix of indices).
    in_support = 1 + k * z_sorted > cumsum
    support_size = in_support.sum(dim=dim, keepdim=True)  # K >= 1 always (k = 1 holds)
    # tau = (sum_{j<=K} z_(j) - 1) / K
    tau = (cumsum.gather(dim, support_size - 1) - 1) / support_size.to(z.dtype)
    return z_sorted, in_support, tau


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Euclidean projection of ``z`` onto the probability simplex (Martins & Astudillo 2016).

    ``p = max(z - tau, 0)``; masked entries (very negative or -inf) get probability exactly 0.
    """
    _, _, tau = _sparsemax_parts(z, dim)
    return torch.clamp(z.clamp(min=mask_fill_value(z.dtype)) - tau, min=0)


def spmax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparse soft value ``1/2 sum_{j<=K} (z_(j)^2 - tau^2) + 1/2``; reduces ``dim``.

    Its gradient w.r.t. ``z`` is ``sparsemax(z)`` (envelope theorem), like logsumexp -> softmax.
    """
    z_sorted, in_support, tau = _sparsemax_parts(z, dim)
    # Zero out-of-support entries *before* squaring: masked values squared would overflow to inf.
    z_supp = torch.where(in_support, z_sorted, torch.zeros_like(z_sorted))
    tau_sq = torch.where(in_support, tau**2, torch.zeros_like(z_sorted))
    return 0.5 * (z_supp**2 - tau_sq).sum(dim=dim) + 0.5


def topk_mask(base_logits: Tensor, k: int) -> Tensor:
    """Bool mask (same shape as ``base_logits``) of the frozen LM's top-k next tokens (last dim)."""
    if not 1 <= k <= base_logits.shape[-1]:
        raise ValueError(f"k must be in [1, {base_logits.shape[-1]}], got {k}")
    idx = base_logits.topk(k, dim=-1).indices
    mask = torch.zeros_like(base_logits, dtype=torch.bool)
    return mask.scatter(-1, idx, True)


def sparse_sql_loss(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    rewards: Tensor,
    mask: Tensor | None,
) -> tuple[Tensor, dict[str, float]]:
    """PIN's loss: RLPrompt's v2_v3 path-consistency loss with ``V = spmax`` and the top-k mask
    applied to both online and target Q. Shapes as in :func:`stableprompt.algorithms.sql.sql_loss`.
    """
    return sql_loss(q, q_target, actions, rewards, value_fn=spmax, mask=mask)


def mc_loss(
    q: Tensor,
    actions: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Monte-Carlo ablation (``--loss mc`` in the published PIN scripts).

    Every step's ``Q(s_t, a_t)`` is regressed straight onto the terminal reward ``R`` (undiscounted
    Monte-Carlo return, since the only reward is terminal): ``mean_{b,t} (Q(s_t,a_t) - R)^2``.
    No bootstrapping, no target network and no spmax term. ``mask`` only matters if an action
    outside it was taken (its Q is then the large negative fill value, i.e. a huge loss).
    """
    q = apply_mask(q, mask)
    q_a = gather_actions(q, actions)  # [B, T]
    loss = ((q_a - rewards.to(q.dtype)[:, None]) ** 2).mean()
    return loss, {"q_mean": q_a.detach().mean().item(), "loss_mc": loss.item()}


@torch.no_grad()
def sample_sparsemax(q: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sample token ids from ``sparsemax(q)`` over the last dim: ``[..., V] -> [...]``.

    Tokens outside the sparsemax support have probability exactly 0 and are never drawn. Apply
    the top-k mask to ``q`` first (``apply_mask``) to restrict to the LM's candidates.
    """
    return sample_index(sparsemax(q.float(), dim=-1), generator)


# ---------------------------------------------------------------------------- the PIN algorithm


class SparseSoftQLearning(SoftQLearning):
    """PIN: RLPrompt with sparse Tsallis entropy. Actions are restricted to the frozen LM's
    top-k next tokens, the policy is sparsemax(Q) and the soft value is spmax(Q)."""

    def allowed(self, base_logits: Tensor) -> Tensor:
        return topk_mask(base_logits, self.config.pin_top_k) & self.policy.allowed

    def choose(self, q: Tensor, base_logits: Tensor) -> Tensor:
        return sample_sparsemax(apply_mask(q, self.allowed(base_logits)))

    def greedy(self, q: Tensor, base_logits: Tensor) -> Tensor:
        return apply_mask(q, self.allowed(base_logits)).argmax(-1)

    def loss(self, q: Tensor, q_target: Tensor, rollout: Rollout, rewards: Tensor):
        mask = self.allowed(rollout.base_logits)
        if self.config.loss == "mc":
            return mc_loss(q, rollout.actions, rewards, mask)
        return sparse_sql_loss(q, q_target, rollout.actions, rewards, mask)
