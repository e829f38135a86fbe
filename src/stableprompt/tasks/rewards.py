"""Rewards computed from the target LM's label-word log-probabilities.

Shapes: `logprobs` is [P, N, C] (prompts x examples x classes), `labels` is [N] class indices,
`keep` (optional) is [P, N], False for pairs a prompt's reward leaves out (an example the prompt
shows as a demonstration). All probabilities are a softmax over the C label words only, as in
RLPrompt.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stableprompt.errors import UserError


def label_probs(logprobs: Tensor) -> Tensor:
    """Softmax over the label-word axis (last dim): renormalises onto the label words."""
    return torch.softmax(logprobs.float(), dim=-1)


def _checked_probs(logprobs: Tensor, labels: Tensor) -> Tensor:
    if logprobs.dim() != 3 or labels.dim() != 1 or logprobs.shape[1] != labels.shape[0]:
        raise ValueError(
            f"expected logprobs [P,N,C] and labels [N], got "
            f"{tuple(logprobs.shape)} and {tuple(labels.shape)}"
        )
    probs = label_probs(logprobs)
    bad = torch.isnan(probs).any(-1)  # NaN inputs, or all -inf (overflowed fp16) rows
    if bad.any():
        raise UserError(
            f"target returned NaN log-probabilities for {int(bad.sum())} rows; "
            "check the target model dtype (try --dtype float32)"
        )
    return probs


def gold_gap(probs: Tensor, labels: Tensor) -> Tensor:
    """p(correct) - max p(other) over the last axis ([P, N, C] -> [P, N]); on log-probs, the
    margin of the gold word (> 0 where the answer is right)."""
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[-1]).bool()
    onehot = onehot.expand_as(probs)
    p_correct = probs.masked_select(onehot).view(probs.shape[:-1])
    p_other = probs.masked_fill(onehot, float("-inf")).amax(-1)
    return p_correct - p_other


def example_mean(values: Tensor, keep: Tensor | None = None) -> Tensor:
    """[P, N] -> [P]: the mean over examples, of the kept ones with `keep`."""
    if keep is None:
        return values.mean(-1)
    keep = keep.to(values.dtype)
    return (values * keep).sum(-1) / keep.sum(-1).clamp(min=1)


def rlprompt_reward(
    logprobs: Tensor,
    labels: Tensor,
    correct_coef: float = 200.0,
    incorrect_coef: float = 180.0,
    keep: Tensor | None = None,
) -> Tensor:
    """RLPrompt's piecewise-linear gap reward, mean over examples -> [P].

    gap = p(correct) - max p(other); reward = correct_coef*gap if gap > 0 else incorrect_coef*gap.
    """
    gap = gold_gap(_checked_probs(logprobs, labels), labels)
    return example_mean(torch.where(gap > 0, correct_coef * gap, incorrect_coef * gap), keep)


def worst_class_reward(
    logprobs: Tensor, labels: Tensor, coef: float = 100.0, keep: Tensor | None = None
) -> Tensor:
    """coef x the mean gap of the class the prompt serves worst -> [P].

    gap = p(correct) - max p(other) per example, averaged within each class present in `labels`;
    the reward is the lowest class average. A small target often answers one label word for any
    input under most prompts: RLPrompt's reward (200 x gap if right, 180 x gap if wrong) then pays
    such a prompt about +10 for its confidence alone, while here it scores its losing class's
    gap, near -coef, so only prompts that separate the classes score well. With `keep`, a class
    none of whose examples a prompt keeps does not count for that prompt.
    """
    gap = gold_gap(_checked_probs(logprobs, labels), labels)
    keep = torch.ones_like(gap, dtype=torch.bool) if keep is None else keep.bool()
    per_class = []
    for c in labels.unique():
        in_class = keep[:, labels == c]
        mean = example_mean(gap[:, labels == c], in_class)
        per_class.append(mean.masked_fill(~in_class.any(-1), float("inf")))
    return coef * torch.stack(per_class, -1).min(-1).values


def zscore(rewards: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise across the prompts of one step with the POPULATION std (unbiased=False),
    so a single prompt gives 0 rather than NaN."""
    rewards = rewards.float()
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)


def appo_reward(
    logprobs: Tensor,
    labels: Tensor,
    acc_coef: float = 10.0,
    gap_coef: float = 0.1,
    keep: Tensor | None = None,
) -> Tensor:
    """StablePrompt's reward R = acc_coef * accuracy + gap_coef * D -> [P].

    accuracy: argmax over label words == label, averaged over examples. D: mean over examples of
    p(correct) - max p(wrong), with probabilities (0..1, not percent) from the label-word softmax.
    """
    probs = _checked_probs(logprobs, labels)
    acc = example_mean((probs.argmax(-1) == labels.long()).float(), keep)
    return acc_coef * acc + gap_coef * example_mean(gold_gap(probs, labels), keep)
