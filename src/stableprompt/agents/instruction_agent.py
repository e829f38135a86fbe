"""StablePrompt's agent: an instruction-tuned causal LM + LoRA + a scalar value head.

The agent reads a meta-prompt (k input/output pairs in the chat template, "what was the
instruction?") and writes a natural-language prompt. Only the LoRA adapter and the value head
train; the base weights are frozen.

Design for CPU speed (and exactness): the meta-prompt minus its last token (the *context*) is
encoded once per meta-prompt by the frozen base LM with the adapter off, and its KV cache is
shared by every sample, every reference and every PPO epoch. The adapter acts on the last
meta-prompt token and on the generated tokens. That is the policy's definition, so sampling,
log-probs and gradients all agree exactly; it only means LoRA cannot re-encode the examples.
Feeding the last meta-prompt token through the adapter keeps the first generated token trainable.
Several meta-prompts (a prompt per input, `--conditioning input`) decode in one batch: their
contexts are right-padded and an attention mask keeps the padding out (`Query.mask`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.cache_utils import DynamicLayer

from stableprompt.errors import UserError
from stableprompt.models.compat import cache_kwarg, few_row_linears, head_logits, output_cache
from stableprompt.models.kv_cache import RoomyLayer
from stableprompt.models.sampling import sample_index
from stableprompt.tasks import Example

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

META_PROMPT = (
    "Here are some input-output pairs:\n\n{pairs}\n\n"
    "{start}Write the instruction that turns each input into its output. "
    "Reply with the instruction only, in one sentence."
)
# StablePrompt's test-time editing: an instruction for one input, optionally rewriting a given one.
INPUT_META_PROMPT = (
    "Here are some input-output pairs:\n\n{pairs}\n\nNow this input:\n\nInput: {input}\n\n"
    "{start}Write the instruction that makes a reader give the right output for this input. "
    "Reply with the instruction only, in one sentence."
)
START_INSTRUCTION = "Start from this instruction and rewrite it for the input: {prompt}\n"
START_TASK_INSTRUCTION = "Start from this instruction and improve it: {prompt}\n"  # --add-manual


@dataclass
class Query:
    """Meta-prompts: token ids [B, Lq] and the base LM's KV cache of the context ids[:, :-1].
    Rows of different lengths are right-padded before their last token; `mask` [B, Lq - 1] marks
    the real context tokens (None: no padding, e.g. a single meta-prompt)."""

    ids: Tensor
    cache: Any
    mask: Tensor | None = None

    def attend(self, done: int, new: int) -> dict:
        """Attention mask and position ids of `new` tokens fed after the context and `done`
        earlier ones; nothing without padding (the model's defaults are right then)."""
        if self.mask is None:
            return {}
        mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], done + new)], 1)
        first = self.mask.sum(1, keepdim=True) + done
        return {"attention_mask": mask, "position_ids": first + torch.arange(new).to(first)}


@dataclass
class Samples:
    """Generated prompts: token ids and mask [B, L] (1 up to and including the stop token).
    `empty[i]`: row i wrote no text, and `texts[i]` holds the agent's fallback prompt.
    `logprobs`, `values` [B, L]: what `forward_logprobs_values` returns for `response` (at the
    sampling temperature; temperature 1 for greedy), read off the decoding pass so PPO need not
    recompute them (equal to ~1e-5 in fp32; bf16 decoding drifts further)."""

    response: Tensor
    mask: Tensor
    texts: list[str]
    empty: list[bool]
    logprobs: Tensor
    values: Tensor


def repeat_cache(cache, rows: int, room: int = 0):
    """A new KV cache holding `rows` copies of a one-row cache; the original stays untouched.
    With `room`, full-attention layers preallocate that many more tokens (for decoding)."""
    repeated = copy.copy(cache)
    repeated.layers = []
    for layer in cache.layers:
        if room and type(layer) is DynamicLayer:
            repeated.layers.append(RoomyLayer.repeated(layer.keys, layer.values, rows, room))
        else:  # copies that append with torch.cat (the shared tensors are never written)
            layer = copy.copy(layer)
            index = torch.arange(rows, device=layer.keys.device) % layer.keys.shape[0]
            layer.reorder_cache(index)  # a one-row cache repeated, a batch of rows kept
            repeated.layers.append(layer)
    return repeated


def lora_target_modules(model: nn.Module) -> list[str] | str:
    """The attention projections this architecture has; all linear layers if it has none."""
    names = {
        name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    found = [t for t in LORA_TARGETS if t in names]
    return found or "all-linear"


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


class InstructionAgent(nn.Module):
    def __init__(
        self,
        lm,
        tokenizer,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.05,
        label_words: list[str] | None = None,
        fallback: str = "Output:",
    ):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            bias="none",
            target_modules=lora_target_modules(lm),
            task_type="CAUSAL_LM",
        )
        self.lm = get_peft_model(lm, config)  # freezes every base weight
        self.tokenizer = tokenizer
        param = next(lm.parameters())
        self.value_head = nn.Linear(lm.config.hidden_size, 1).to(param.device, torch.float32)
        nn.init.normal_(self.value_head.weight, std=1e-3)  # small: values start near 0
        nn.init.zeros_(self.value_head.bias)
        self.label_words = [w.strip() for w in label_words] if label_words else None
        self.fallback = fallback
        self._token_tables(self.head.weight.shape[0], param.device)
        self.eval()

    # Properties, not attributes: registering these submodules twice would duplicate parameters.
    @property
    def causal(self) -> nn.Module:
        return self.lm.get_base_model()

    @property
    def decoder(self) -> nn.Module:
        return getattr(self.causal, self.causal.base_model_prefix)

    @property
    def head(self) -> nn.Module:
        return self.causal.get_output_embeddings()

    def _token_tables(self, vocab: int, device: torch.device) -> None:
        """Per token: special (stops), holds a newline, holds text, holds text before a newline."""
        n = min(vocab, len(self.tokenizer))
        pieces = self.tokenizer.batch_decode([[i] for i in range(n)])
        self.stop_special = torch.ones(vocab, dtype=torch.bool)  # ids past the tokenizer stop too
        self.stop_special[:n] = False
        eos = self.causal.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        specials = [i for i in {*self.tokenizer.all_special_ids, *eos} if i < vocab]
        self.stop_special[specials] = True
        self.has_newline = torch.tensor([("\n" in p) for p in pieces] + [False] * (vocab - n))
        self.has_text = torch.tensor([bool(p.strip()) for p in pieces] + [False] * (vocab - n))
        self.text_before_newline = torch.tensor(
            [bool(p.split("\n")[0].strip()) for p in pieces] + [False] * (vocab - n)
        )
        for name in ("stop_special", "has_newline", "has_text", "text_before_newline"):
            setattr(self, name, getattr(self, name).to(device))

    # -- meta-prompt --------------------------------------------------------------------------

    def output_text(self, example: Example) -> str:
        if example.target is not None:  # generation task: the first acceptable answer
            return example.answers[0]
        return self.label_words[example.label]

    def meta_prompt(
        self, examples: list[Example], k: int, input_text: str | None = None, start: str = ""
    ) -> str:
        """The chat-template text showing k input/output pairs and asking for the instruction of
        the task, or with `input_text` for that input; either rewrites the instruction `start`
        if one is given (--add-manual)."""
        pairs = "\n\n".join(
            f"Input: {ex.text.strip()}\nOutput: {self.output_text(ex)}" for ex in examples[:k]
        )
        if input_text is None:
            start = START_TASK_INSTRUCTION.format(prompt=start) if start else ""
            content = META_PROMPT.format(pairs=pairs, start=start)
        else:
            start = START_INSTRUCTION.format(prompt=start) if start else ""
            content = INPUT_META_PROMPT.format(pairs=pairs, input=input_text.strip(), start=start)
        messages = [{"role": "user", "content": content}]
        if not self.tokenizer.chat_template:
            raise UserError(
                "the agent model has no chat template; use an instruction-tuned model "
                "(e.g. --agent smollm2-135m)"
            )
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def encode_query(self, meta_text: str) -> Query:
        """Tokenise a meta-prompt and encode its context with the frozen base LM (once)."""
        return self.encode_queries([meta_text])

    @torch.no_grad()
    def encode_queries(self, meta_texts: list[str]) -> Query:
        """Several meta-prompts as one batch (one sample each): contexts right-padded to the
        longest, each row's last token after the padding."""
        rows = [self.tokenizer(t, add_special_tokens=False).input_ids for t in meta_texts]
        if min(map(len, rows)) < 2:
            raise ValueError("the meta-prompt must be at least two tokens long")
        width, pad = max(map(len, rows)), self.tokenizer.pad_token_id
        device = self.head.weight.device
        ids = torch.tensor([r[:-1] + [pad] * (width - len(r)) + r[-1:] for r in rows])
        mask = torch.tensor([[1] * (len(r) - 1) + [0] * (width - len(r)) for r in rows])
        mask = mask.to(device) if not mask.all() else None
        with self.lm.disable_adapter():
            out = self.decoder(
                input_ids=ids[:, :-1].to(device), attention_mask=mask, use_cache=True
            )
        return Query(ids.to(device), output_cache(out), mask)

    # -- policy -------------------------------------------------------------------------------

    def _hidden(self, query: Query, tokens: Tensor) -> Tensor:
        """Last hidden states for [last meta-prompt token, tokens] on a copy of the context."""
        rows = tokens.shape[0]
        cache = repeat_cache(query.cache, rows)
        inputs = torch.cat([query.ids[:, -1:].expand(rows, 1), tokens], dim=1)
        out = self.decoder(
            input_ids=inputs,
            use_cache=True,
            **cache_kwarg(self.decoder, cache),
            **query.attend(0, inputs.shape[1]),
        )
        return out.last_hidden_state

    def _packed_hidden(
        self, query: Query, tokens: Tensor, row_of: Tensor, offset: Tensor
    ) -> Tensor:
        """`_hidden`'s states at the positions (row_of[i], offset[i]) only, [N, H]: the rows run
        as one sequence after a single copy of the context, each token attending to the context
        and its own row's earlier tokens (a block-diagonal causal mask, positions restarting per
        row), so the padding after short rows costs no compute."""
        inputs = torch.cat([query.ids[:, -1:].expand(tokens.shape[0], 1), tokens], dim=1)
        own = (row_of[:, None] == row_of[None, :]) & (offset[:, None] >= offset[None, :])
        context = query.cache.get_seq_length()
        mask = torch.cat([own.new_ones(len(row_of), context), own], 1)
        out = self.decoder(
            input_ids=inputs[row_of, offset][None],
            use_cache=True,
            **cache_kwarg(self.decoder, repeat_cache(query.cache, 1)),
            attention_mask=mask[None, None],
            position_ids=(context + offset)[None],
        )
        return out.last_hidden_state[0]

    def packable(self, query: Query, length: int) -> bool:
        """Whether `_packed_hidden` computes what `_hidden` does: one unpadded context, and no
        sliding window it could reach (a custom mask replaces the model's window masks)."""
        window = getattr(self.causal.config, "sliding_window", None)
        context = query.cache.get_seq_length()
        return query.ids.shape[0] == 1 and (window is None or context + length <= window)

    def forward_logprobs_values(
        self,
        query: Query,
        response: Tensor,
        temperature: float = 1.0,
        full: bool = False,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Log-probs [B, L] of `response` under the policy (or [B, L, V] with `full`), and the
        value [B, L] of the state before each response token. Grad flows to LoRA and the head.
        With the response `mask`, only its tokens are computed (rows packed into one sequence;
        0 at padded positions): what PPO's masked losses read, for a third less work when rows
        differ in length."""
        packed = mask is not None and not full and self.packable(query, response.shape[1])
        if packed:
            where = mask.nonzero(as_tuple=True)  # (row, offset) of each token, row after row
            hidden = self._packed_hidden(query, response[:, :-1], *where)  # [N, H]
            response = response[where]
        else:
            hidden = self._hidden(query, response[:, :-1])  # position t predicts response[:, t]
        logprobs = F.log_softmax(head_logits(self.head, hidden).float() / temperature, dim=-1)
        values = self.value_head(hidden.float()).squeeze(-1)
        if full:
            return logprobs, values
        chosen = logprobs.gather(-1, response[..., None]).squeeze(-1)
        if packed:  # back to [B, L], 0 at the padding
            zeros = chosen.new_zeros(mask.shape)
            return zeros.index_put(where, chosen), zeros.index_put(where, values)
        return chosen, values

    @torch.no_grad()
    def sample(
        self, query: Query, num: int, max_new_tokens: int, temperature: float = 1.0
    ) -> Samples:
        """`num` prompts for one meta-prompt (or one for each of a batch of `num`); temperature 0
        is greedy. A row stops at a special token (eos, chat markers) or at a newline once it has
        written some text."""
        if query.ids.shape[0] not in (1, num):
            raise ValueError(f"{query.ids.shape[0]} meta-prompts take one sample each, not {num}")
        device = query.ids.device
        cache = repeat_cache(query.cache, num, room=max_new_tokens + 1)
        token = query.ids[:, -1:].expand(num, 1)
        pad = self.tokenizer.pad_token_id
        finished = torch.zeros(num, dtype=torch.bool, device=device)
        had_text = torch.zeros_like(finished)
        tokens, mask, logprobs, values = [], [], [], []
        with self.merged_lora(), few_row_linears(self):
            for done in range(max_new_tokens):
                out = self.decoder(
                    input_ids=token,
                    use_cache=True,
                    **cache_kwarg(self.decoder, cache),
                    **query.attend(done, 1),
                )
                cache = output_cache(out)
                hidden = out.last_hidden_state[:, -1]
                logits = head_logits(self.head, hidden).float() / (temperature or 1.0)
                if temperature > 0:
                    nxt = sample_index(torch.softmax(logits, dim=-1))
                else:
                    nxt = logits.argmax(-1)
                nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
                logprobs.append(F.log_softmax(logits, dim=-1).gather(-1, nxt[:, None]).squeeze(-1))
                values.append(self.value_head(hidden.float()).squeeze(-1))
                mask.append(~finished)
                stop = self.stop_special[nxt] | (
                    self.has_newline[nxt] & (had_text | self.text_before_newline[nxt])
                )
                had_text |= self.has_text[nxt]
                finished = finished | stop
                tokens.append(nxt)
                if finished.all():
                    break
                token = nxt[:, None]
        response = torch.stack(tokens, 1)
        mask = torch.stack(mask, 1).long()
        texts = self.decode(response, mask)
        return Samples(
            response,
            mask,
            [t or self.fallback for t in texts],
            [not t for t in texts],
            torch.stack(logprobs, 1),
            torch.stack(values, 1),
        )

    def decode(self, response: Tensor, mask: Tensor) -> list[str]:
        """Prompt text: generated tokens up to the stop, first line, stripped (may be empty)."""
        texts = []
        for ids, m in zip(response.tolist(), mask.tolist()):
            text = self.tokenizer.decode(ids[: sum(m)], skip_special_tokens=True)
            texts.append(text.strip().split("\n")[0].strip())
        return texts

    # -- weights ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def merged_lora(self) -> Iterator[None]:
        """Decode with each LoRA update folded into its base weight (W + scale * B @ A): one
        matmul per projection instead of three, in eval mode only (the fold has no dropout) and
        on fp32 weights only (bf16 would round a small update away). The merged weights are new
        tensors and the original parameters are put back as they were, so the training weights
        never round (peft's in-place merge/unmerge would)."""
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.lm.modules() if isinstance(m, LoraLayer)]
        weights = [getattr(m.get_base_layer(), "weight", None) for m in layers]
        fp32 = all(isinstance(w, Tensor) and w.dtype == torch.float32 for w in weights)
        if self.training or not layers or not fp32 or layers[0].disable_adapters:
            yield  # dropout on, weights not fp32, or the adapter off (the initial agent)
            return
        saved = []
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                merged = base.weight.detach().clone()
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        merged += layer.get_delta_weight(name).to(merged.dtype)
                saved.append((base, base.weight))
                base.weight = nn.Parameter(merged, requires_grad=False)
        try:
            with self.lm.disable_adapter():
                yield
        finally:
            for base, weight in saved:
                base.weight = weight

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def using_weights(self, state: dict[str, Tensor] | None) -> Iterator[None]:
        """Temporarily act as another policy: `None` is the frozen initial agent (adapter off),
        a dict from `copy_trainable_state` is e.g. the anchor. Restores the weights bit for bit."""
        if state is None:
            with self.lm.disable_adapter():
                yield
            return
        saved = copy_trainable_state(self)
        load_trainable_state(self, state)
        try:
            yield
        finally:
            load_trainable_state(self, saved)
