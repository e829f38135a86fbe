"""How natural a prompt reads: perplexity under a reference LM and the share of English words.

RL-found prompts are often token soup ("ImageSlide Absolutely VERY") that works for one target
and says nothing to a person; these two numbers make that visible next to the accuracy.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

# web2 (Webster's 2nd) lower-cased, letters only: broad, but without regular inflections,
# which `_is_word` adds back.
WORD_LISTS = ("web2",)
_SUFFIXES = ("s", "es", "ed", "d", "ing")
_ONE_LETTER_WORDS = frozenset({"a", "i"})  # the lists also hold every letter as an entry


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The word list, loaded once per process (about 0.2 s)."""
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(WORD_LISTS, lower=True, alpha=True))


def _is_word(text: str, words: frozenset[str]) -> bool:
    """A whole English word, or a regular inflection (-s, -es, -ed, -d, -ing) of a listed one."""
    if len(text) == 1:
        return text in _ONE_LETTER_WORDS
    if not text.isalpha() or not text.isascii():
        return False
    if text in words:
        return True
    return any(
        text.endswith(s) and len(text) - len(s) >= 2 and text[: -len(s)] in words for s in _SUFFIXES
    )


def english_word_share(prompts: list[str], tokenizer) -> list[float]:
    """Share of each prompt's tokens (as `tokenizer` splits it) that are whole English words.

    A token counts when its text, stripped and lower-cased, is in the word list (or a regular
    inflection of a listed word). Pure punctuation or whitespace tokens, digits, single letters
    other than "a"/"i", and byte fragments count as non-words; a word split over several tokens
    counts as its pieces. An empty prompt gets NaN.
    """
    words = english_words()
    shares = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([i]).strip().lower() for i in ids]
        hits = sum(_is_word(p, words) for p in pieces)
        shares.append(hits / len(pieces) if pieces else math.nan)
    return shares


def _start_id(tokenizer) -> int:
    """A document-start symbol: GPT-2's "<|endoftext|>" where the vocabulary has it, else BOS,
    else EOS. (SmolLM2's BOS is the chat marker <|im_start|>, after which every prompt looks
    unlikely: "It was" gets perplexity 12,741 there and 334 after <|endoftext|>.)"""
    start = tokenizer.get_vocab().get("<|endoftext|>")  # (it may double as SmolLM2's unk)
    if start is not None:
        return start
    start = tokenizer.bos_token_id
    if start is None:
        start = tokenizer.eos_token_id
    if start is None:
        raise ValueError("the reference tokenizer has neither a BOS nor an EOS token")
    return start


@torch.inference_mode()
def _mean_nll(lm, rows: list[list[int]], pad_id: int) -> list[float]:
    """Mean NLL of tokens 1.. of each row given the tokens before it (right-padded batch)."""
    device = next(lm.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    logits = lm(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    token_lp = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    counted = mask[:, 1:].float()
    return ((-token_lp * counted).sum(-1) / counted.sum(-1)).tolist()


def prompt_perplexity(prompts: list[str], lm, tokenizer, batch_size: int = 8) -> list[float]:
    """Perplexity of each prompt under `lm`: exp of the mean NLL of its tokens.

    The first token is conditioned on a start symbol (BOS, else EOS), so one-token prompts get a
    value too; an empty prompt gets NaN. Batches are right-padded; no gradients, and `lm` should
    be in eval mode (as `load_lm` returns it) so the numbers are deterministic.
    """
    start = _start_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    rows = [[start, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    result = [math.nan] * len(prompts)
    todo = [i for i, row in enumerate(rows) if len(row) > 1]
    # Similar lengths share a batch, so little compute goes to padding.
    todo.sort(key=lambda i: len(rows[i]))
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        for i, nll in zip(chunk, _mean_nll(lm, [rows[i] for i in chunk], pad_id)):
            result[i] = math.exp(nll)
    return result


def naturalness(prompts: list[str], lm, tokenizer) -> list[dict]:
    """Both measures per prompt: {"perplexity": ..., "english_word_share": ...}."""
    return [
        {"perplexity": ppl, "english_word_share": share}
        for ppl, share in zip(
            prompt_perplexity(prompts, lm, tokenizer), english_word_share(prompts, tokenizer)
        )
    ]
