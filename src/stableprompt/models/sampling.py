"""Sampled generation for a local causal LM: top-k / temperature sampling, reproducible by seed.

Every output row draws from its own `torch.Generator`, seeded from (seed, text, sample index), so
a text's samples do not depend on which other texts share its batch or in which order they come.
The same (text, settings, seed) therefore always gives the same samples, which is what lets the
scorer cache them exactly like greedy answers. Each text is encoded once and its KV cache repeated
for its samples; a row leaves the batch when it draws EOS or a token holding a stop string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from inspect import signature

import torch
from torch import Tensor

from stableprompt.models.compat import cache_kwarg, lm_logits, output_cache, real_positions
from stableprompt.tasks.metrics import as_stops, cut_at_stops


def row_seed(seed: int, text: str, index: int) -> int:
    """A 63-bit generator seed for sample `index` of `text` (stable across processes)."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@lru_cache(maxsize=8)
def stop_token_ids(tokenizer, stops: tuple[str, ...]) -> Tensor:
    """Ids of the tokens whose text contains a stop string, plus EOS (decoded once per
    tokenizer): drawing one of them ends the row, since the text is cut there anyway."""
    vocab = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(vocab)]) if stops else []
    ids = {i for i, t in enumerate(texts) if any(s in t for s in stops)}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return torch.tensor(sorted(ids), dtype=torch.long)


def sample_index(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One index per row of `probs` [..., N] (non-negative, rows need not sum to 1), drawn with
    probability proportional to its entry -> [...]. Inverse-CDF sampling, one uniform per row:
    `torch.multinomial` draws an exponential per entry, 12-17x slower over a 49k-token vocabulary
    (4.5 ms for 4 rows on a 2-core CPU; benchmarks/small_kernels.py). Never draws a zero."""
    cdf = probs.cumsum(-1)
    total = cdf[..., -1:]
    u = torch.rand(total.shape, generator=generator, dtype=cdf.dtype, device=cdf.device) * total
    index = torch.searchsorted(cdf, u, right=True)  # first entry whose cdf exceeds u
    last = (cdf < total).sum(-1, keepdim=True)  # the last nonzero entry (u rounding up to total)
    return torch.minimum(index, last).squeeze(-1)


def draw(
    logits: Tensor, generators: list[torch.Generator], top_k: int | None, temperature: float
) -> Tensor:
    """One token per row from softmax(logits / temperature) restricted to the top k -> [B]."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        values, ids = logits.topk(top_k, dim=-1)
    else:
        values, ids = logits, None
    probs = torch.softmax(values, dim=-1).cpu()
    picks = torch.stack([sample_index(p, g) for p, g in zip(probs, generators)])
    picks = picks.to(logits.device)
    return picks if ids is None else ids.gather(1, picks[:, None]).squeeze(-1)


def _left_pad(tokenizer, texts: list[str], device) -> tuple[Tensor, Tensor]:
    encoded = [tokenizer(t).input_ids for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    return ids, mask


def _prefill(model, ids: Tensor, mask: Tensor):
    """Run the prompts; only the last position goes through the LM head where the model lets us."""
    keep = {"logits_to_keep": 1} if "logits_to_keep" in signature(model.forward).parameters else {}
    positions = real_positions(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep)
    return output_cache(out), out.logits[:, -1]


def _sample_batch(
    model, tokenizer, texts: list[str], settings: dict, stop_ids: Tensor
) -> list[list[str]]:
    """Samples for one batch of texts: encode each text once, repeat its cache per sample, and
    drop rows from the batch as they stop, so one long row does not keep the others running."""
    n, device = settings["num_samples"], next(model.parameters()).device
    ids, mask = _left_pad(tokenizer, texts, device)
    cache, logits = _prefill(model, ids, mask)
    cache.batch_repeat_interleave(n)
    mask, logits = mask.repeat_interleave(n, dim=0), logits.repeat_interleave(n, dim=0)
    generators = [
        torch.Generator().manual_seed(row_seed(settings["seed"], t, k))
        for t in texts
        for k in range(n)
    ]
    stop_ids = stop_ids.to(device)
    tokens: list[list[int]] = [[] for _ in generators]
    active = torch.arange(len(generators), device=device)  # rows still generating
    for step in range(settings["max_new_tokens"]):
        rows = active.tolist()
        token = draw(
            logits, [generators[r] for r in rows], settings["top_k"], settings["temperature"]
        )
        for r, t in zip(rows, token.tolist()):
            tokens[r].append(t)
        running = ~torch.isin(token, stop_ids)
        if not running.any() or step == settings["max_new_tokens"] - 1:
            break
        if not running.all():
            keep = running.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            active, token, mask = active[keep], token[keep], mask[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model.model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=mask.sum(1, keepdim=True) - 1,
            use_cache=True,
            **cache_kwarg(model.model, cache),
        )
        cache, logits = output_cache(out), lm_logits(model, out.last_hidden_state[:, -1])
    decoded = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    return [decoded[i * n : (i + 1) * n] for i in range(len(texts))]


@torch.inference_mode()
def sample_generate(
    model,
    tokenizer,
    texts: list[str],
    max_new_tokens: int,
    stop: str | Sequence[str] | None,
    num_samples: int,
    top_k: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_rows: int = 64,
) -> list[list[str]]:
    """`num_samples` sampled continuations of each text, each cut at the first stop string.

    Batches hold about `batch_rows` rows (texts x samples), texts of similar length together.
    """
    if num_samples < 1 or temperature <= 0:
        raise ValueError(
            f"need num_samples >= 1 and temperature > 0 (got {num_samples}, {temperature})"
        )
    stops = as_stops(stop)
    settings = {
        "num_samples": num_samples,
        "max_new_tokens": max_new_tokens,
        "top_k": top_k,
        "temperature": temperature,
        "seed": seed,
    }
    stop_ids = stop_token_ids(tokenizer, stops)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_batch = max(1, batch_rows // num_samples)
    results: list[list[str]] = [[] for _ in texts]
    for start in range(0, len(order), per_batch):
        chunk = order[start : start + per_batch]
        samples = _sample_batch(model, tokenizer, [texts[i] for i in chunk], settings, stop_ids)
        for i, outs in zip(chunk, samples, strict=True):
            results[i] = [cut_at_stops(o, stops) for o in outs]
    return results
