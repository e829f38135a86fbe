"""RLPrompt's token policy: a frozen causal LM, a small trainable MLP, the LM's own output head.

Q(s, .) = lm_head(mlp(h(s))), where h(s) is the frozen LM's last hidden state after reading the
prompt so far. Only the MLP trains. Its last layer starts near zero, so the initial Q is nearly
flat over the vocabulary and early prompts explore widely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stableprompt.models.compat import cache_kwarg, few_row_linears, head_logits, output_cache
from stableprompt.models.sampling import sample_index


@dataclass
class Rollout:
    """A batch of prompts and what the loss needs about them."""

    actions: Tensor  # [B, T] token ids
    hidden: Tensor  # [B, T, H] frozen LM state before each action (no grad)
    base_logits: Tensor  # [B, T, V] the frozen LM's own next-token logits (for PIN's top-k filter)


def build_mlp(hidden_size: int, mlp_hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(
        nn.Linear(hidden_size, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, hidden_size)
    )
    for layer in (mlp[0], mlp[2]):  # RLPrompt's init: tiny weights, so Q starts almost uniform
        nn.init.normal_(layer.weight, std=1e-4)
        nn.init.constant_(layer.bias, 1e-4)
    return mlp


class TokenPolicy(nn.Module):
    def __init__(
        self, lm, tokenizer, prompt_length: int = 5, mlp_hidden: int = 2048, context: str = ""
    ):
        """`context`: text the policy reads before its first action, and that every prompt
        starts with (--continue-manual: the user's prompt, which the learned tokens continue)."""
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.prompt_length = prompt_length
        for p in lm.parameters():
            p.requires_grad_(False)
        param = next(lm.parameters())
        self.mlp = build_mlp(lm.config.hidden_size, mlp_hidden).to(param.device, torch.float32)
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.start_ids = torch.tensor([start, *token_ids(tokenizer, context)], device=param.device)
        self.allowed = allowed_prompt_tokens(tokenizer, lm.get_output_embeddings().weight.shape[0])
        self.allowed = self.allowed.to(param.device)

    def q_values(self, hidden: Tensor, mlp: nn.Module | None = None) -> Tensor:
        """Q = lm_head(mlp(h)) in float32; gradients reach only the MLP."""
        out = (mlp or self.mlp)(hidden.float())
        return head_logits(self.lm.get_output_embeddings(), out)

    def mask(self, rollout: Rollout) -> Tensor:
        """Allowed actions (the same in every state): see `allowed_prompt_tokens`."""
        return self.allowed

    def _lm_step(self, ids: Tensor, cache):
        out = self.lm.model(input_ids=ids, use_cache=True, **cache_kwarg(self.lm.model, cache))
        return out.last_hidden_state[:, -1], output_cache(out)

    @torch.no_grad()
    def rollout(self, batch_size: int, choose: Callable[[Tensor, Tensor], Tensor]) -> Rollout:
        """Generate `batch_size` prompts token by token with the KV cache.

        `choose(q, base_logits)` maps Q-values [B, V] to actions [B] (sampling or argmax).
        """
        ids = self.start_ids.expand(batch_size, -1)
        cache, actions, hiddens, bases = None, [], [], []
        with few_row_linears(self):
            for _ in range(self.prompt_length):
                h, cache = self._lm_step(ids, cache)
                base = head_logits(self.lm.get_output_embeddings(), h).float()
                q = self.q_values(h).masked_fill(~self.allowed, float("-inf"))
                base = base.masked_fill(~self.allowed, float("-inf"))
                action = choose(q, base)
                actions.append(action)
                hiddens.append(h.float())
                bases.append(base)
                ids = action[:, None]
        return Rollout(torch.stack(actions, 1), torch.stack(hiddens, 1), torch.stack(bases, 1))

    @torch.no_grad()
    def replay(self, actions: Tensor) -> Rollout:
        """Recompute the states of stored prompts (one forward of the frozen LM)."""
        start = self.start_ids.expand(actions.shape[0], -1)
        ids = torch.cat([start, actions[:, :-1]], dim=1)
        hidden = self.lm.model(input_ids=ids).last_hidden_state[:, start.shape[1] - 1 :]
        base = head_logits(self.lm.get_output_embeddings(), hidden).float()
        return Rollout(actions, hidden.float(), base.masked_fill(~self.allowed, float("-inf")))

    def decode(self, actions: Tensor) -> list[str]:
        """Prompt texts, the context included: decoded together, so the learned tokens keep
        their spacing against it."""
        return decode_after(self.tokenizer, self.start_ids, actions)


def token_ids(tokenizer, text: str) -> list[int]:
    """`text`'s tokens without special tokens ([] for no text)."""
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def decode_after(tokenizer, start_ids: Tensor, actions: Tensor) -> list[str]:
    """Each row of `actions` decoded after `start_ids` (special tokens dropped): decoded
    together, so the learned tokens keep their spacing against a context."""
    rows = torch.cat([start_ids.to(actions).expand(actions.shape[0], -1), actions], dim=1)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


def allowed_prompt_tokens(tokenizer, vocab_size: int) -> Tensor:
    """Tokens a prompt may use: not special (eos, chat markers, padding), and not a lone byte
    fragment that decodes to U+FFFD (such tokens turn into different text when re-tokenised)."""
    allowed = torch.zeros(vocab_size, dtype=torch.bool)
    pieces = tokenizer.batch_decode([[i] for i in range(min(vocab_size, len(tokenizer)))])
    for i, piece in enumerate(pieces):
        allowed[i] = "\ufffd" not in piece
    allowed[[i for i in tokenizer.all_special_ids if i < vocab_size]] = False
    return allowed


def sample_top_k(q: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Sample from softmax(Q) restricted to its top-k entries (RLPrompt's training sampler)."""
    values, indices = q.topk(min(k, q.shape[-1]), dim=-1)
    choice = sample_index(torch.softmax(values, dim=-1), generator)
    return indices.gather(-1, choice[..., None]).squeeze(-1)
