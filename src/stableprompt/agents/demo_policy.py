"""RLPrompt's token policy with train examples for tokens (`--demonstrations K`).

An action picks one of N candidate demonstrations; a prompt is K of them, distinct, in order.
As in the token policy, a frozen LM reads and a small MLP learns: the frozen LM encodes every
candidate once (its last hidden state after the rendered demonstration), the state before the
t-th pick is the mean of the start state and the picks so far, and
Q(s, i) = mlp(state) . e_i, the candidates' encodings (scaled to the norm of the LM's output
head rows) standing in for that head.
Its last layer starts near zero, so early prompts are drawn almost uniformly. With `classes`
(`--balanced-demonstrations`) a class already shown `class_cap` times is masked like a repeat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from stableprompt.agents.token_policy import Rollout, build_mlp
from stableprompt.tasks.demonstrations import class_cap


class DemoPolicy(nn.Module):
    def __init__(
        self,
        lm,
        tokenizer,
        texts: list[str],
        length: int,
        mlp_hidden: int = 2048,
        classes: list[int] | None = None,
    ):
        """`texts`: the rendered candidates; a prompt is `length` of them joined. `classes`:
        each candidate's class, to show each at most `class_cap` times, or None."""
        super().__init__()
        if length > len(texts):
            raise ValueError(f"{length} demonstrations from {len(texts)} candidates")
        self.texts, self.prompt_length = texts, length
        self.classes = None if classes is None else torch.tensor(classes)
        self.cap = None if classes is None else class_cap(length, classes)
        for p in lm.parameters():
            p.requires_grad_(False)
        param = next(lm.parameters())
        start = tokenizer.bos_token or tokenizer.eos_token
        states = torch.stack([last_hidden(lm, tokenizer, t) for t in [start, *texts]])
        self.start, self.embeddings = states[0], states[1:]  # the MLP reads raw LM states
        # The head is scaled to the output head's row norm: Q then moves as fast as the token
        # policy's does under the same learning rate.
        head_norm = lm.get_output_embeddings().weight.float().norm(dim=-1).mean()
        self.head = self.embeddings * head_norm / self.embeddings.norm(dim=-1, keepdim=True)
        self.mlp = build_mlp(lm.config.hidden_size, mlp_hidden).to(param.device, torch.float32)

    def q_values(self, hidden: Tensor, mlp: nn.Module | None = None) -> Tensor:
        """Q [..., N] of each candidate; gradients reach only the MLP."""
        return (mlp or self.mlp)(hidden) @ self.head.T

    def states(self, actions: Tensor) -> Tensor:
        """[B, T, H]: before pick t, the mean of the start state and picks 0..t-1."""
        picked = self.embeddings[actions[:, :-1]]  # [B, T-1, H]
        none = picked.new_zeros(actions.shape[0], 1, picked.shape[-1])
        total = torch.cat([none, picked.cumsum(1)], dim=1)
        count = torch.arange(1, actions.shape[1] + 1, device=total.device)[:, None]
        return (self.start + total) / count

    def repeats(self, actions: Tensor) -> Tensor:
        """[B, T, N] "base logits": 0 where a candidate is still free, -inf where picked before
        or its class is full (the mask the loss and the samplers see, as the token policy's LM
        logits are)."""
        shape = (*actions.shape, len(self.texts))
        used = torch.zeros(shape, dtype=torch.bool, device=actions.device)
        for t in range(1, actions.shape[1]):
            used[:, t] = used[:, t - 1].scatter(-1, actions[:, t - 1 : t], True)
        if self.classes is not None:
            classes = self.classes.to(actions.device)
            picked = nn.functional.one_hot(classes[actions], int(classes.max()) + 1)  # [B, T, C]
            shown_before = picked.cumsum(1) - picked
            used |= (shown_before >= self.cap)[..., classes]
        return torch.zeros(shape, device=actions.device).masked_fill(used, float("-inf"))

    def mask(self, rollout: Rollout) -> Tensor:
        """Allowed actions per state: candidates not yet shown in this prompt."""
        return rollout.base_logits.isfinite()

    @torch.no_grad()
    def rollout(self, batch_size: int, choose: Callable[[Tensor, Tensor], Tensor]) -> Rollout:
        """`choose(q, base)` maps Q [B, N] (picked candidates at -inf) to actions [B]."""
        actions = torch.zeros(batch_size, 0, dtype=torch.long, device=self.embeddings.device)
        for t in range(self.prompt_length):
            padded = torch.cat([actions, actions.new_zeros(batch_size, 1)], dim=1)  # t's column
            base = self.repeats(padded)[:, t]
            q = self.q_values(self.states(padded)[:, t]) + base
            actions = torch.cat([actions, choose(q, base)[:, None]], dim=1)
        return self.replay(actions)

    @torch.no_grad()
    def replay(self, actions: Tensor) -> Rollout:
        return Rollout(actions, self.states(actions), self.repeats(actions))

    def decode(self, actions: Tensor) -> list[str]:
        return ["".join(self.texts[i] for i in row) for row in actions.tolist()]


@torch.no_grad()
def last_hidden(lm, tokenizer, text: str) -> Tensor:
    """The frozen LM's final hidden state after reading `text` (float32 [H])."""
    ids = tokenizer(text, return_tensors="pt").input_ids.to(next(lm.parameters()).device)
    return lm.model(input_ids=ids).last_hidden_state[0, -1].float()
