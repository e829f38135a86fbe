"""Helpers that keep the model code working across transformers versions and head layouts:
the KV-cache keyword and attribute (renamed between releases), position ids of padded batches,
the LM head (and few-row linear layers) computed the way CPUs run them fastest, and attention that
hands grouped key/value heads to torch as they are. No other module of ours is imported here."""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F

FEW_ROWS = 16  # up to this many rows a linear layer runs faster as weight @ x^T (decode_floor.py)


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real (unmasked) tokens; padding gets position 0."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def cache_kwarg(module, cache) -> dict:
    """transformers renamed `past_key_values` to `cache`; pass whichever this version takes."""
    params = inspect.signature(module.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def output_cache(out):
    """The KV cache a forward returned (`cache` in newer transformers, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def head_logits(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`head(hidden)` for a linear LM head, computed as `weight @ hidden^T`.

    With far fewer rows than vocabulary entries (decoding, last-position scoring), MKL's fp32
    GEMM runs this layout 1.5-4x faster than `F.linear`'s (benchmarks/head_matmul.py). The
    weights are cast to `hidden`'s dtype (float32 Q-values of a bf16 model stay float32).
    """
    if not isinstance(head, torch.nn.Linear):
        return head(hidden)
    flat = hidden.reshape(-1, hidden.shape[-1])
    logits = (head.weight.to(hidden.dtype) @ flat.T).T
    if head.bias is not None:
        logits = logits + head.bias.to(hidden.dtype)
    return logits.reshape(*hidden.shape[:-1], head.weight.shape[0])


GROUPED_SDPA = "sdpa_grouped"  # the attention implementation `use_grouped_sdpa` selects


def grouped_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except under a mask with grouped key/value heads (GQA):
    there transformers copies each key/value head once per query head (`repeat_kv`) before
    calling torch; this passes them as they are (`enable_gqa`), which torch's CPU kernels take
    with a mask. Same result, faster: the scorer's suffix batches (a mask over each input's
    cached prefix) most (benchmarks/small_kernels.py). Other cases go to transformers' function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = getattr(module, "num_key_value_groups", 1) > 1
    plain = not any(kwargs.get(k) is not None for k in ("position_bias", "softcap"))
    if attention_mask is None or not grouped or not plain or query.device.type != "cpu":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model: torch.nn.Module) -> None:
    """Switch a transformers model that attends with sdpa to `grouped_sdpa` (others unchanged)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)  # the masks sdpa gets
    model.set_attn_implementation(GROUPED_SDPA)


def _few_row_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.numel() > FEW_ROWS * x.shape[-1]:
        return F.linear(x, self.weight, self.bias)
    # row-major again (a few rows: a tiny copy): a transposed query would send attention to
    # torch's unfused math kernel, as the flash kernel wants the head dimension contiguous
    return head_logits(self, x).contiguous()


@contextlib.contextmanager
def few_row_linears(model: torch.nn.Module) -> Iterator[None]:
    """Within: each `nn.Linear` of `model` given at most FEW_ROWS rows (decoding a few
    sequences a token at a time) computes `weight @ x^T`, the layout `head_logits` uses, which
    MKL's fp32 GEMM runs faster at that shape than `F.linear`'s; more rows take `F.linear`."""
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    linears = [m for m in linears if "forward" not in vars(m)]  # not already patched (nested)
    for m in linears:
        m.forward = types.MethodType(_few_row_forward, m)  # an instance attribute, deleted after
    try:
        yield
    finally:
        for m in linears:
            del m.forward


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The causal LM's logits on selected hidden states (honours final logit soft-capping)."""
    logits = head_logits(model.get_output_embeddings(), hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
