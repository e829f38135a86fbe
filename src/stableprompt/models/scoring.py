"""The target scoring engine: log p(label word | prompt, input) for many prompts and inputs at once.

This is the hot path of every algorithm. A sequence is `template` with `{prompt}` and `{input}`
filled in, followed by a label word. Its tokens are tokenize(prefix) + tokenize(suffix) +
tokenize(label), where the prefix is the template up to and including whichever placeholder comes
first (and its repeats before the other one). Every row that shares a prefix shares its KV cache,
so with an input-first template each input is encoded once for all prompts, and with a
prompt-first template each prompt once for all inputs. Only the positions that predict label
tokens are projected onto the vocabulary. A generation task's greedy answers are decoded on the
same prefix store: the tokens a batch of texts shares (a prompt and its solved pairs) run once.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from stableprompt.errors import UserError
from stableprompt.models.compat import (
    cache_kwarg,
    few_row_linears,
    lm_logits,
    output_cache,
    real_positions,
)
from stableprompt.models.kv_cache import RoomyLayer
from stableprompt.models.sampling import sample_generate, stop_token_ids
from stableprompt.tasks.metrics import as_stops, cut_at_stops
from stableprompt.tasks.registry import check_template, fill_template

PREFIX_BUCKET = 16  # prefixes are padded to a multiple of this many tokens (see _encode_prefixes)


def prefix_width(tokens: int) -> int:
    """The width a prefix of `tokens` is encoded at: the next multiple of PREFIX_BUCKET."""
    return -(-tokens // PREFIX_BUCKET) * PREFIX_BUCKET


def split_template(template: str, prompt: str, text: str) -> tuple[str, str]:
    """Split the filled template after the last placeholder of the kind that comes first, before
    the other kind appears: (shared prefix, rest). A template that repeats the prompt before the
    input (`--target-shots`: solved pairs under the prompt) shares all of them."""
    check_template(template)
    first, other = sorted(("{prompt}", "{input}"), key=template.find)
    cut = template.rfind(first, 0, template.find(other)) + len(first)
    return fill_template(template[:cut], prompt, text), fill_template(template[cut:], prompt, text)


class ScoreCache:
    """LRU map from (model, template, labels, prompt, input) to the per-class log-probs."""

    def __init__(self, max_entries: int = 1_000_000):
        self.max_entries = max_entries
        self.store: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, key: tuple) -> torch.Tensor | None:
        value = self.store.get(key)
        if value is not None:
            self.store.move_to_end(key)
        return value

    def put(self, key: tuple, value: torch.Tensor) -> None:
        self.store[key] = value
        if len(self.store) > self.max_entries:
            self.store.popitem(last=False)

    def state(self) -> dict:
        """The entries, least recent first, for torch.save: tensors as one flat tensor (tens of
        thousands of tiny tensors would save and load ~10x slower and 3x larger)."""
        keys, values = list(self.store), list(self.store.values())
        if values and all(isinstance(v, torch.Tensor) for v in values):
            flat = torch.cat([v.reshape(-1) for v in values])
            return {"keys": keys, "shapes": [list(v.shape) for v in values], "flat": flat}
        return {"keys": keys, "values": values}

    def load_state(self, state: dict) -> None:
        values = state.get("values")
        if values is None:
            sizes = [math.prod(shape) for shape in state["shapes"]]
            parts = torch.split(state["flat"], sizes) if sizes else []
            values = [part.view(shape) for part, shape in zip(parts, state["shapes"])]
        self.store = OrderedDict(zip((tuple(k) for k in state["keys"]), values, strict=True))


# Pairs scored per chunk when a progress bar is on; shorter scorings (a training step) run whole.
PROGRESS_CHUNK = 512
# Texts decoded as one batch (benchmarks/generation.py times it); progress chunks keep the
# batches, so the same answers.
GENERATION_CHUNK = 32


class TargetScorer(ABC):
    """What every target backend (local model, remote server) provides to the algorithms."""

    name: str

    def __init__(self, cache: ScoreCache | None = None):
        self.cache = cache if cache is not None else ScoreCache()
        self.calls = 0  # (prompt, input) pairs asked for, cache hits included: the budget unit
        self.computed = 0  # pairs that actually reached the model
        self.progress = False  # a bar on stderr for long scorings (test sets, `eval`)
        self.gen_cache = ScoreCache()  # (model, text, max_new_tokens, stop) -> generated answer

    def state(self) -> dict:
        """What a resumed run needs to get the same scores: a recomputed score can differ in
        its last bits (it would share a batch with other rows), so the caches are checkpointed."""
        return {"cache": self.cache.state(), "gen_cache": self.gen_cache.state()}

    def load_state(self, state: dict) -> None:
        self.cache.load_state(state["cache"])
        self.gen_cache.load_state(state["gen_cache"])

    def score(
        self, prompts: list[str], inputs: list[str], template: str, label_words: list[str]
    ) -> torch.Tensor:
        """log p(label word | prompt, input) as float32 [prompts, inputs, classes]."""
        pairs = [(p, x) for p in prompts for x in inputs]
        scores = self.score_pairs(pairs, template, label_words)
        return scores.view(len(prompts), len(inputs), len(label_words))

    def score_pairs(
        self, pairs: list[tuple[str, str]], template: str, label_words: list[str]
    ) -> torch.Tensor:
        """log p(label word | prompt, input) as float32 [pairs, classes] for (prompt, input)
        pairs (e.g. a prompt written for each input)."""
        labels = tuple(label_words)
        keys = [(self.name, template, labels, p, x) for p, x in pairs]
        rows = self._cached(
            self.cache,
            keys,
            lambda missing: self._score_pairs([(k[3], k[4]) for k in missing], template, labels),
            group=lambda k: split_template(template, k[3], k[4])[0],  # pairs sharing a prefix
        )
        return torch.stack(rows).view(len(pairs), len(labels))

    def _cached(self, cache: ScoreCache, keys: list, compute, chunk: int = 0, group=None) -> list:
        """Count every key as a query; only keys the cache lacks reach `compute` (once each, in
        one batched call, or in chunks behind a progress bar), and their results are stored.
        Keys with the same `group(key)` (e.g. the pairs that share an input's encoding) are
        sorted together and never split between chunks."""
        self.calls += len(keys)
        found = {k: cache.get(k) for k in keys}
        missing = list(dict.fromkeys(k for k, v in found.items() if v is None))
        if group:
            missing.sort(key=group)
        chunk = chunk or PROGRESS_CHUNK
        if self.progress and len(missing) > chunk:  # minutes of work: show a bar
            computed = _with_progress(missing, compute, chunk, group)
        elif missing:
            computed = compute(missing)
        if missing:
            self.computed += len(missing)
            for key, value in zip(missing, computed, strict=True):
                cache.put(key, value)
                found[key] = value
        return [found[k] for k in keys]

    def generate(
        self, texts: list[str], max_new_tokens: int = 32, stop: str | None = "\n"
    ) -> list[str]:
        """Greedy continuations of `texts`, cut at the first `stop`. Cached like `score`: only
        texts never seen reach the model (in one batched call), and all count as calls."""
        keys = [(self.name, t, max_new_tokens, stop) for t in texts]
        return self._cached(
            self.gen_cache,
            keys,
            lambda missing: self._generate([k[1] for k in missing], max_new_tokens, stop),
            chunk=GENERATION_CHUNK,  # a greedy answer costs a decoding loop, not one pass
        )

    def sample(
        self,
        texts: list[str],
        max_new_tokens: int = 32,
        stop: str | tuple[str, ...] | None = "\n",
        num_samples: int = 4,
        top_k: int | None = 10,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> list[list[str]]:
        """`num_samples` sampled continuations per text (top-k, temperature), each cut at the
        first of the `stop` strings. A text's samples depend only on (text, settings, seed), not on
        its batch, so they are cached like `generate`; a text counts as one query."""
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        settings = (max_new_tokens, stops, num_samples, top_k, temperature, seed)
        keys = [(self.name, "sample", t, settings) for t in texts]
        found = self._cached(
            self.gen_cache, keys, lambda missing: self._sample([k[2] for k in missing], *settings)
        )
        return [list(samples) for samples in found]

    def _sample(
        self,
        texts: list[str],
        max_new_tokens: int,
        stop: tuple[str, ...],
        num_samples: int,
        top_k: int | None,
        temperature: float,
        seed: int,
    ) -> list[list[str]]:
        """Sampled continuations (uncached); backends that cannot sample say so."""
        raise UserError(
            f"target {self.name!r} cannot sample text (use a local causal LM target for this task)"
        )

    @abstractmethod
    def _score_pairs(
        self, pairs: list[tuple[str, str]], template: str, label_words: tuple[str, ...]
    ) -> torch.Tensor:
        """Log-probs [len(pairs), classes] for (prompt, input) pairs."""

    @abstractmethod
    def _generate(self, texts: list[str], max_new_tokens: int, stop: str | None) -> list[str]:
        """Greedy continuations of `texts`, cut at the first `stop` (uncached)."""


def _with_progress(keys: list, compute, chunk: int, group=None) -> list:
    """`compute(keys)` in chunks of `chunk` keys (more where a run of equal `group(key)` would
    be cut), with a progress bar on stderr."""
    from tqdm.auto import tqdm  # slow to import: only for long scorings

    out: list = []
    with tqdm(total=len(keys), desc="scoring", unit="pair", dynamic_ncols=True) as bar:
        start = 0
        while start < len(keys):
            end = min(start + chunk, len(keys))
            while group and end < len(keys) and group(keys[end]) == group(keys[end - 1]):
                end += 1  # a group stays whole
            out += compute(keys[start:end])
            bar.update(end - start)
            start = end
    return out


@dataclass
class _Row:
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]  # rest of the template, then all but the last label token
    targets: list[list[int]]  # per class: the label tokens read off this row's last positions


def label_token_ids(tokenizer, label_words: tuple[str, ...]) -> list[list[int]]:
    """Token ids of each label word; a word the vocabulary cannot spell is a clear error."""
    ids = []
    for word in label_words:
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        if not tokens or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in tokens):
            raise UserError(
                f"label word {word!r} is not in the target's vocabulary "
                "(choose another label word in the task's label_words)"
            )
        ids.append(tokens)
    return ids


def check_context(scorer, tokens: int, text: str) -> None:
    """Refuse a sequence longer than the target's context: past it positions are undefined (or
    wrap, or fail deep in the model), so a score would be meaningless; truncating would score a
    different input than the user gave."""
    limits = [getattr(scorer.model.config, "max_position_embeddings", None)]
    limits.append(getattr(scorer.tokenizer, "model_max_length", None))  # RoBERTa: 512 < 514
    limit = min((n for n in limits if isinstance(n, int) and 0 < n < 10**7), default=None)
    if limit and tokens > limit:
        raise UserError(
            f"an input is {tokens:,} tokens with its prompt, template and label, more than "
            f"the {limit:,}-token context of target {scorer.name} (it starts {text[:40]!r}): "
            "shorten or drop such inputs, or use a target with a longer context"
        )


class LocalScorer(TargetScorer):
    """Scores with a local Hugging Face causal LM: shared-prefix KV reuse, batched, cached."""

    def __init__(
        self,
        model,
        tokenizer,
        cache: ScoreCache | None = None,
        prefix_batch_size: int = 32,
        suffix_batch_size: int = 128,
        prefix_store_tokens: int = 20_000,
    ):
        super().__init__(cache)
        self.model, self.tokenizer = model, tokenizer
        self.name = getattr(model, "name_or_path", None) or model.config.name_or_path
        # prefix token ids -> (keys and values [layers, 2, heads, tokens, dim], last hidden
        # state), least recent first; bounded by total prefix tokens (about 46 KB each for
        # SmolLM2-135M in fp32)
        self.prefix_store: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = (
            OrderedDict()
        )
        self.prefix_store_tokens = prefix_store_tokens
        self.prefix_batch_size = prefix_batch_size
        self.suffix_batch_size = suffix_batch_size
        self.device = next(model.parameters()).device
        # a sliding-attention layer keeps only its window's last tokens of a prefix's KV
        layers = DynamicCache(config=model.config).layers
        sliding = any(type(layer) is not DynamicLayer for layer in layers)
        self.window = getattr(model.config, "sliding_window", None) if sliding else None

    def _encode(self, text: str, special: bool) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=special).input_ids)

    def build_rows(
        self, pairs: list[tuple[str, str]], template: str, label_words: tuple[str, ...]
    ) -> list[list[_Row]]:
        """Token rows for each pair: one row if all labels are single tokens, else one per class."""
        label_ids = label_token_ids(self.tokenizer, label_words)
        single = all(len(ids) == 1 for ids in label_ids)
        rows = []
        for prompt, text in pairs:
            head, rest = split_template(template, prompt, text)
            prefix, suffix = self._encode(head, True), self._encode(rest, False)
            if not prefix:  # the shared prefix must hold at least one token to attend to
                prefix, suffix = suffix[:1], suffix[1:]
            check_context(self, len(prefix) + len(suffix) + max(map(len, label_ids)), text)
            if single:
                rows.append([_Row(prefix, suffix, label_ids)])
            else:
                rows.append([_Row(prefix, suffix + tuple(ids[:-1]), [ids]) for ids in label_ids])
            longest = max(rows[-1], key=lambda row: len(row.suffix))
            if not self.inside_window([longest], 0):
                raise UserError(
                    f"an input with its prompt is {len(prefix) + len(longest.suffix):,} tokens, "
                    f"beyond the {self.window}-token sliding attention window of target "
                    f"{self.name}, which the local scorer cannot reuse (the input starts "
                    f"{text[:40]!r}): shorten such inputs or prompts, or serve the target with "
                    "vLLM or llama.cpp (--target http://...)"
                )
        return rows

    @torch.inference_mode()
    def _score_pairs(self, pairs, template, label_words):
        per_pair = self.build_rows(pairs, template, label_words)
        out: list[torch.Tensor | None] = [None] * len(per_pair)
        # a test set's inputs outgrow the store: score them a store's quarter at a time
        budget = self.prefix_store_tokens // 4
        for chunk in prefix_chunks([rows[0].prefix for rows in per_pair], budget):
            row_scores = iter(self.score_rows([row for i in chunk for row in per_pair[i]]))
            for i in chunk:
                out[i] = torch.cat([next(row_scores) for _ in per_pair[i]])
        return torch.stack(out)

    def score_rows(self, rows: list[_Row]) -> list[torch.Tensor]:
        """Per row, the summed log-prob of each of its targets."""
        self._encode_prefixes({row.prefix for row in rows})
        # Length bucketing: neighbours in this order need little padding.
        order = sorted(range(len(rows)), key=lambda i: batch_order(rows[i]))
        results: list[torch.Tensor | None] = [None] * len(rows)
        lengths = [len(rows[i].suffix) for i in order]
        for span in padded_batches(lengths, self.suffix_batch_size):
            for cut in self.window_batches([rows[i] for i in order[span]], room=0):
                chunk = [order[span][j] for j in cut]
                for i, score in zip(chunk, self._score_suffixes([rows[i] for i in chunk])):
                    results[i] = score
        self._trim_prefix_store()
        return results

    def _encode_prefixes(self, prefixes: set[tuple[int, ...]]) -> None:
        """Run the prefixes not yet in the store; keep each one's KV and last hidden state.

        The store outlives a call, so inputs scored at every training step are encoded once.
        A prefix is right-padded to a width set by its own length (the next multiple of
        PREFIX_BUCKET) and batched only with prefixes of that width, so its encoding does not
        depend on which other inputs were missing with it: padded to the batch's longest, a row
        differed by up to ~1e-4 nats in bf16, and a resumed run (whose store starts empty)
        drifted from an uninterrupted one. (Encoding each prefix alone would also do that, but
        one short row at a time is much slower.)
        """
        widths: dict[int, list[tuple[int, ...]]] = {}
        for p in sorted(p for p in prefixes if p not in self.prefix_store):
            widths.setdefault(prefix_width(len(p)), []).append(p)
        pad = self.tokenizer.pad_token_id
        for width, group in sorted(widths.items()):
            for start in range(0, len(group), self.prefix_batch_size):
                batch = group[start : start + self.prefix_batch_size]
                ids = torch.tensor([list(p) + [pad] * (width - len(p)) for p in batch])
                mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in batch])
                out = self.model.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    use_cache=True,
                )
                # [layers, 2, rows, heads, width, dim]: one copy per prefix when scoring
                kv = torch.stack(
                    [torch.stack([la.keys, la.values]) for la in output_cache(out).layers]
                )
                for j, p in enumerate(batch):
                    hidden = out.last_hidden_state[j, len(p) - 1].clone()
                    self.prefix_store[p] = (kv[:, :, j, :, : len(p)].clone(), hidden)
        for p in prefixes:
            self.prefix_store.move_to_end(p)

    def _trim_prefix_store(self) -> None:
        total = sum(len(p) for p in self.prefix_store)
        while total > self.prefix_store_tokens and len(self.prefix_store) > 1:
            oldest, _ = self.prefix_store.popitem(last=False)
            total -= len(oldest)

    def _prefix_cache(self, prefixes: list[tuple[int, ...]], room: int):
        """A batch KV cache of right-padded stored prefixes with `room` more tokens, its mask
        and last hidden states. Each prefix is copied once, into buffers the suffixes are then
        written after (full-attention layers; other kinds keep transformers' own layer)."""
        width = max(len(p) for p in prefixes)
        stored = [self.prefix_store[p] for p in prefixes]
        layers, _, heads, _, dim = stored[0][0].shape
        kv = stored[0][0].new_empty(layers, 2, len(prefixes), heads, width + room, dim)
        for r, (prefix_kv, _) in enumerate(stored):
            n = prefix_kv.shape[3]
            kv[:, :, r, :, :n] = prefix_kv
            kv[:, :, r, :, n:width] = 0  # padding: masked, but must not be NaN
        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            if type(layer) is DynamicLayer:
                cache.layers[i] = RoomyLayer(kv[i, 0], kv[i, 1], width)
            else:
                layer.update(kv[i, 0, :, :, :width], kv[i, 1, :, :, :width])
        mask = torch.tensor(
            [[1] * len(p) + [0] * (width - len(p)) for p in prefixes], device=self.device
        )
        last = torch.stack([h for _, h in stored])
        return cache, mask, last

    def _run_suffixes(self, rows: list[_Row], room: int = 0):
        """Run the suffixes of `rows` (left-padded) on top of their prefixes' stored KV, with
        `room` more tokens in the cache. Returns the cache, its mask, the suffix width and the
        hidden states [rows, 1 + width, H] (the prefix's last, then the suffix's)."""
        suffixes = [row.suffix for row in rows]
        width = max(len(s) for s in suffixes)
        cache, mask, hidden = self._prefix_cache([row.prefix for row in rows], width + room)
        hidden = hidden[:, None]
        pad = self.tokenizer.pad_token_id
        if width:
            ids = torch.tensor(
                [[pad] * (width - len(s)) + list(s) for s in suffixes], device=self.device
            )
            suffix_mask = torch.tensor(
                [[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=self.device
            )
            prefix_width = mask.shape[1]
            mask = torch.cat([mask, suffix_mask], dim=1)
            out = self.model.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=real_positions(mask)[:, prefix_width:],
                use_cache=True,
                **cache_kwarg(self.model.model, cache),
            )
            hidden = torch.cat([hidden, out.last_hidden_state], dim=1)
        return cache, mask, width, hidden

    def _score_suffixes(self, rows: list[_Row]) -> list[torch.Tensor]:
        """Each row's target log-probs, its suffix run on top of its prefix's stored KV."""
        suffixes = [row.suffix for row in rows]
        _, _, width, hidden = self._run_suffixes(rows)
        # Window of the last n_keep predicting positions per row. Logically a row reads
        # [prefix_last, suffix tokens]; physically its suffix sits at the right end (left padding).
        n_keep = max(len(t) for row in rows for t in row.targets)
        index = torch.zeros(len(rows), n_keep, dtype=torch.long)
        for r, s in enumerate(suffixes):
            for k in range(n_keep):
                logical = len(s) + 1 - n_keep + k
                index[r, k] = width - len(s) + logical if logical > 0 else 0
        index = index.to(self.device)
        window = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        logprobs = _head_logprobs(self.model, window)  # [rows, n_keep, vocab], float32
        scores = []
        for r, row in enumerate(rows):
            per_target = []
            for target in row.targets:
                slots = torch.arange(n_keep - len(target), n_keep, device=self.device)
                per_target.append(
                    logprobs[r, slots, torch.tensor(target, device=self.device)].sum()
                )
            scores.append(torch.stack(per_target).cpu())
        return scores

    @torch.inference_mode()
    def _generate(self, texts, max_new_tokens, stop):
        """Greedy answers, GENERATION_CHUNK texts at a time. The tokens all of a batch's texts
        start with (the prompt, and any solved pairs shown before the input) are encoded once
        into the prefix store, so a row runs only its input and its answer: under five solved
        pairs a few times faster than transformers' `generate`, which encodes every text whole
        (benchmarks/generation.py). Models whose generation config changes greedy decoding
        (a repetition penalty, say) take `generate`; with a sliding attention window (Gemma 3)
        a batch is cut into batches the window holds, and texts it cannot hold with their
        answers take `generate`."""
        if not plain_greedy(self.model.generation_config):
            return greedy_generate(
                self.model, self.tokenizer, texts, max_new_tokens, stop, GENERATION_CHUNK
            )
        ends = end_token_ids(self.model, self.tokenizer, as_stops(stop))
        answers = []
        for start in range(0, len(texts), GENERATION_CHUNK):
            chunk = texts[start : start + GENERATION_CHUNK]
            encoded = [self._encode(text, True) for text in chunk]
            prefixes = shared_prefixes(encoded)
            rows = [_Row(p, ids[len(p) :], []) for p, ids in zip(prefixes, encoded, strict=True)]
            out: list[str] = [""] * len(rows)
            too_long = []  # texts the window cannot hold with their answers: `generate`
            for cut in self.window_batches(rows, max_new_tokens):
                batch = [rows[j] for j in cut]
                if not self.inside_window(batch, max_new_tokens):
                    too_long += cut
                    continue
                self._encode_prefixes({row.prefix for row in batch})
                for j, answer in zip(cut, self._greedy_answers(batch, max_new_tokens, ends)):
                    out[j] = answer
            if too_long:
                generated = greedy_generate(
                    self.model, self.tokenizer, [chunk[j] for j in too_long], max_new_tokens, stop
                )
                for j, answer in zip(too_long, generated, strict=True):
                    out[j] = answer
            answers += out
            self._trim_prefix_store()
        return [cut_at_stops(answer, stop) for answer in answers]

    def inside_window(self, rows: list[_Row], room: int) -> bool:
        """Whether a batch of `rows` with `room` more tokens stays inside the sliding attention
        window, if the model has one. A batch lays its rows out as prefixes (each encoded
        padded to a PREFIX_BUCKET multiple) right-padded to the longest, then suffixes
        left-padded, then the room; sliding layers mask and trim by that layout, so below the
        window they attend to every token, as the model on each text alone does."""
        if not self.window:
            return True
        prefix = max(len(row.prefix) for row in rows)
        layout = prefix + max(len(row.suffix) for row in rows) + room
        return max(prefix_width(prefix), layout) < self.window

    def window_batches(self, rows: list[_Row], room: int) -> list[list[int]]:
        """Positions of `rows`, cut in order into batches that each stay `inside_window` (one
        batch without a window); a row the window cannot hold is a batch of its own."""
        batches: list[list[int]] = [[]]
        for i, row in enumerate(rows):
            batch = [rows[j] for j in batches[-1]] + [row]
            if batches[-1] and not self.inside_window(batch, room):
                batches.append([])
            batches[-1].append(i)
        return batches

    def _greedy_answers(self, rows: list[_Row], max_new_tokens: int, ends: torch.Tensor):
        """Decode `rows` greedily on top of their prefixes until each has written one of `ends`
        (EOS, or a token holding a stop string) or `max_new_tokens` tokens."""
        cache, mask, _, hidden = self._run_suffixes(rows, room=max_new_tokens)
        # a row's last token: its suffix's (left-padded, at the right end), else its prefix's
        last = torch.tensor([hidden.shape[1] - 1 if row.suffix else 0 for row in rows])
        logits = lm_logits(self.model, hidden[torch.arange(len(rows)), last])
        tokens: list[list[int]] = [[] for _ in rows]
        running = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        with few_row_linears(self.model):  # a decoding step has a few rows: faster layout
            for step in range(max_new_tokens):
                token = logits.argmax(-1)
                for r in running.nonzero().squeeze(-1).tolist():
                    tokens[r].append(int(token[r]))
                running &= ~torch.isin(token, ends)
                if not running.any() or step == max_new_tokens - 1:
                    break
                # finished rows keep decoding (the cache appends in place, rows stay put);
                # what they write is not kept
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                out = self.model.model(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=mask.sum(1, keepdim=True) - 1,
                    use_cache=True,
                    **cache_kwarg(self.model.model, cache),
                )
                logits = lm_logits(self.model, out.last_hidden_state[:, -1])
        return self.tokenizer.batch_decode(tokens, skip_special_tokens=True)

    def _sample(self, texts, max_new_tokens, stop, num_samples, top_k, temperature, seed):
        return sample_generate(
            self.model,
            self.tokenizer,
            texts,
            max_new_tokens,
            stop,
            num_samples,
            top_k,
            temperature,
            seed,
        )


def prefix_chunks(prefixes: list[tuple[int, ...]], budget: int) -> list[list[int]]:
    """Indices of `prefixes` in groups whose distinct prefixes hold at most `budget` tokens
    (or one prefix), equal prefixes in one group: each is encoded once while the prefix store,
    trimmed after every group, stays bounded however many inputs a call holds."""
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for i, prefix in enumerate(prefixes):
        by_prefix.setdefault(prefix, []).append(i)
    chunks: list[list[int]] = [[]]
    tokens = 0
    for prefix in sorted(by_prefix):
        if chunks[-1] and tokens + len(prefix) > budget:
            chunks.append([])
            tokens = 0
        chunks[-1] += by_prefix[prefix]
        tokens += len(prefix)
    return chunks


def shared_prefixes(sequences: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each sequence's prefix to encode once: the tokens all of its group start with, where
    groups are the sequences that agree on at least half the longest stretch any two agree on
    (the texts of one prompt, when a batch holds the last texts of one and the first of the
    next). A sequence alone in its group is all prefix (its last hidden state predicts the
    answer); one sharing nothing (no BOS, another first word) keeps its first token.
    `os.path.commonprefix` compares element-wise, so it works on token tuples."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    agree = [
        len(os.path.commonprefix([sequences[a], sequences[b]])) for a, b in zip(order, order[1:])
    ]
    cut = max(agree, default=0) / 2
    groups = [[order[0]]]
    for i, n in zip(order[1:], agree):
        if n < cut:
            groups.append([])
        groups[-1].append(i)
    prefixes: list[tuple[int, ...]] = [()] * len(sequences)
    for group in groups:
        shared = os.path.commonprefix([sequences[i] for i in group])
        for i in group:
            prefixes[i] = shared or sequences[i][:1]
    return prefixes


# Generation settings that do not change greedy decoding (sampling ones are off in greedy).
GREEDY_NEUTRAL = {
    "use_cache", "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id",
    "eos_token_id", "_from_model_config", "transformers_version", "do_sample", "temperature",
    "top_k", "top_p", "min_p", "typical_p", "max_length", "max_new_tokens", "cache_implementation",
}  # fmt: skip


def plain_greedy(generation_config) -> bool:
    """Whether greedy decoding under `generation_config` is the argmax of the logits at each
    step (no repetition penalty, banned or forced tokens, minimum length...)."""
    return set(generation_config.to_diff_dict()) <= GREEDY_NEUTRAL


def end_token_ids(model, tokenizer, stops: tuple[str, ...]) -> torch.Tensor:
    """Tokens that end an answer: those holding a stop string, the tokenizer's EOS and the
    generation config's EOS ids (which `generate` stops at)."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    ids = set(stop_token_ids(tokenizer, stops).tolist()) | set(eos)
    return torch.tensor(sorted(ids), dtype=torch.long, device=next(model.parameters()).device)


def batch_order(row: _Row) -> tuple[int, int]:
    """Sort key of rows for batching: suffix length first. The suffix runs through every layer,
    so its padding costs full compute; prefix padding costs attention and a KV copy only (with
    input-first templates too, where prefixes vary more: benchmarks/reward_batches.py)."""
    return len(row.suffix), len(row.prefix)


def padded_batches(
    lengths: list[int], max_rows: int, slack: float = 1.1, min_tokens: int = 256
) -> list[slice]:
    """Cut `lengths` (in order) into consecutive batches of at most `max_rows` rows. A batch also
    ends before a row that would make its padded size (rows x longest) exceed `slack` times its
    real tokens, once it holds `min_tokens` real tokens (smaller batches waste the GEMMs more
    than padding does)."""
    batches, start, total, longest = [], 0, 0, 0
    for end, length in enumerate(lengths):
        rows, width = end - start, max(longest, length)
        padded_too_much = (rows + 1) * width > slack * (total + length) and total >= min_tokens
        if rows and (rows == max_rows or padded_too_much):
            batches.append(slice(start, end))
            start, total, width = end, 0, length
        total, longest = total + length, width
    if start < len(lengths):
        batches.append(slice(start, len(lengths)))
    return batches


def _head_logprobs(model, hidden: torch.Tensor) -> torch.Tensor:
    """log_softmax of the LM head on selected hidden states."""
    return F.log_softmax(lm_logits(model, hidden).float(), dim=-1)


def greedy_generate(
    model, tokenizer, texts: list[str], max_new_tokens: int, stop: str | None, batch_size: int = 16
) -> list[str]:
    """Batched greedy decoding with left padding; each output is cut at the first `stop`."""
    outputs = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
            batch = batch.to(next(model.parameters()).device)
            # A batch ends once every row has written `stop`: short answers cost a few tokens.
            stopping = {"stop_strings": [stop], "tokenizer": tokenizer} if stop else {}
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                **stopping,
            )
            new = generated[:, batch.input_ids.shape[1] :]
            for text in tokenizer.batch_decode(new, skip_special_tokens=True):
                outputs.append(text.split(stop)[0] if stop else text)
    finally:
        tokenizer.padding_side = side
    return outputs


class NaiveScorer(LocalScorer):
    """Reference scorer: one full forward per (prompt, input, class), logits at every position.

    This is what RLPrompt does. It reads the same token ids as LocalScorer, so the two must agree;
    tests and benchmarks/scoring.py compare them.
    """

    def score_rows(self, rows: list[_Row]) -> list[torch.Tensor]:
        results = []
        for row in rows:
            per_target = []
            for target in row.targets:
                ids = torch.tensor(
                    [list(row.prefix + row.suffix) + target[-1:]], device=self.device
                )
                logprobs = F.log_softmax(self.model(input_ids=ids).logits.float(), dim=-1)[0]
                n = len(target)
                steps = torch.arange(ids.shape[1] - n - 1, ids.shape[1] - 1, device=self.device)
                per_target.append(logprobs[steps, torch.tensor(target, device=self.device)].sum())
            results.append(torch.stack(per_target).cpu())
        return results


class MaskedLMScorer(TargetScorer):
    """Scores with a masked LM (RoBERTa-style): the label word is read at a `<mask>` appended
    after the filled template. Label words must be single tokens; inputs are batched and cached
    like the causal engine, but a bidirectional model cannot share prefixes."""

    def __init__(self, model, tokenizer, cache: ScoreCache | None = None, batch_size: int = 32):
        super().__init__(cache)
        if tokenizer.mask_token is None:
            raise UserError(f"{model.name_or_path} has no mask token (use a causal LM target)")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.name = getattr(model, "name_or_path", None) or model.config.name_or_path
        self.device = next(model.parameters()).device

    def texts(self, pairs: list[tuple[str, str]], template: str, label_words) -> list[str]:
        # A leading space in the label words belongs before the mask (RoBERTa's <mask> absorbs it).
        space = " " if label_words[0].startswith(" ") else ""
        return [fill_template(template, p, x) + space + self.tokenizer.mask_token for p, x in pairs]

    @torch.inference_mode()
    def _score_pairs(self, pairs, template, label_words):
        ids = label_token_ids(self.tokenizer, label_words)
        if any(len(t) != 1 for t in ids):
            word = label_words[next(i for i, t in enumerate(ids) if len(t) != 1)]
            raise UserError(
                f"label word {word!r} is split into several tokens by the masked LM "
                "(choose single-token label words for masked-LM targets)"
            )
        label_ids = torch.tensor([t[0] for t in ids], device=self.device)
        texts = self.texts(pairs, template, label_words)
        for (_, text), full in zip(pairs, texts, strict=True):
            check_context(self, len(self.tokenizer(full).input_ids), text)
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True
            ).to(self.device)
            logits = self.model(**batch).logits
            rows, cols = (batch.input_ids == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            logprobs = F.log_softmax(logits[rows, cols].float(), dim=-1)
            out.append(logprobs[:, label_ids].cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def _generate(self, texts, max_new_tokens, stop):
        raise UserError("a masked-LM target cannot generate text (use a causal LM for this task)")
