"""Remote targets: any OpenAI-compatible `/v1/completions` server (vLLM, SGLang, llama.cpp).

Exact label log-probs come from echoed prompt log-probs: each sequence (template filled with prompt
and input, then a label word) is sent as text with `echo=true` and `logprobs`, and the log-probs of
the tokens that spell the label word are summed. The server tokenises the whole string at once,
whereas LocalScorer tokenises the prefix, the rest and the label separately; with byte-level BPE
the two agree whenever no merge crosses a segment boundary (the usual case, since words carry
their leading space). Servers that cannot echo prompt log-probs get an approximate fallback.

Spec: `openai:<model>@<base_url>[,<base_url>...]`; the API key is read from an environment
variable (OPENAI_API_KEY by default) and never logged. The per-request timeout is the `timeout`
argument, else $STABLEPROMPT_REQUEST_TIMEOUT, else 120 s.

Answers are not trusted: an error body, a wrong number of choices, choices without distinct
`index` fields, or a log-prob that is NaN, infinite or positive stop the run with one line.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import torch

from stableprompt.errors import UserError
from stableprompt.models.scoring import ScoreCache, TargetScorer
from stableprompt.tasks.registry import fill_template

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
PROBE_TEXT = "Review: the film was great, not boring! It was"
TIMEOUT_ENV = "STABLEPROMPT_REQUEST_TIMEOUT"
DEFAULT_TIMEOUT = 120.0
# A log-prob is log(p) <= 0; allow float rounding in the server's log-softmax, nothing more.
LOGPROB_SLACK = 1e-4


@dataclass(frozen=True)
class RemoteSpec:
    model: str
    base_urls: tuple[str, ...]


def parse_remote_spec(spec: str) -> RemoteSpec:
    """`openai:<model>@<url>[,<url>...]` -> RemoteSpec (URLs normalised to the server root)."""
    usage = "use --target openai:<model>@http://host:port[,http://host2:port]"
    if not spec.startswith("openai:"):
        raise UserError(f"remote target {spec!r} must start with 'openai:' ({usage})")
    model, at, urls = spec.removeprefix("openai:").partition("@")
    if not model or not at or not urls:
        raise UserError(f"remote target {spec!r} needs a model and a base URL ({usage})")
    base_urls = []
    for url in urls.split(","):
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise UserError(f"base URL {url!r} in {spec!r} needs http:// or https:// ({usage})")
        base_urls.append(url.removesuffix("/v1"))  # we add /v1/... ourselves
    return RemoteSpec(model, tuple(base_urls))


def request_timeout(timeout: float | None = None) -> float:
    """Seconds per HTTP request: `timeout`, else $STABLEPROMPT_REQUEST_TIMEOUT, else 120."""
    raw = timeout if timeout is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        source = "timeout" if timeout is not None else f"${TIMEOUT_ENV}"
        raise UserError(
            f"{source}={raw!r} is not a positive number of seconds "
            f"(set {TIMEOUT_ENV} to e.g. 120, or unset it)"
        )
    return value


@dataclass
class _Transient:
    """A failed attempt worth retrying: connection error, timeout, 429 or 5xx."""

    reason: str
    wait: float | None  # the server's Retry-After, if any


@dataclass
class _Capabilities:
    mode: str  # "echo" | "forced" (exact) or "top-k" (approximate), see OpenAIScorer
    batch: bool  # server accepts a list of prompts per request


class OpenAIScorer(TargetScorer):
    """TargetScorer backed by one or more OpenAI-compatible completion servers.

    `batch_size` sequences go in one request, at most `concurrency` requests are in flight, and
    requests cycle over the base URLs. Transient failures (connection errors, timeouts, 429, 5xx)
    are retried with exponential backoff; after `max_retries` a one-line UserError tells the user
    to restart the server and resume.

    The first request probes the server and picks a scoring mode:
    - "echo": echoed prompt log-probs, checked against a plain next-token log-prob (exact).
    - "forced": where echo is missing or wrong (llama-cpp-python shifts it by one token for models
      without BOS), each label token is generated with `logit_bias` +100 and its raw log-prob
      read back; needs label token ids from the local tokenizer or a /tokenize endpoint (exact).
    - "top-k": otherwise `approximate` is True: only each label's first token is scored, from the
      next-token top-k, and labels outside the top-k get the k-th log-prob as a floor.
    """

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        tokenizer=None,
        cache: ScoreCache | None = None,
        concurrency: int = 8,
        batch_size: int = 16,
        timeout: float | None = None,
        max_retries: int = 5,
        backoff: float = 0.5,
        api_key_env: str = "OPENAI_API_KEY",
        top_logprobs: int = 20,
    ):
        super().__init__(cache)
        if not base_urls:
            raise UserError("remote target needs at least one base URL")
        self.model, self.base_urls, self.tokenizer = model, tuple(base_urls), tokenizer
        self.name = f"openai:{model}"  # cache key: replicas of one model share entries
        self.concurrency, self.batch_size = max(1, concurrency), max(1, batch_size)
        self.max_retries, self.backoff, self.top_logprobs = max_retries, backoff, top_logprobs
        self.api_key_env = api_key_env
        self.timeout = request_timeout(timeout)
        self.approximate = False
        self.requests = 0  # HTTP requests sent (attempts, retries included)
        self.boundary_merges = 0  # sequences whose label shared a token with the context
        self._caps: _Capabilities | None = None
        self._word_ids: dict[str, list[int] | None] = {}
        self._lock = threading.Lock()
        self._next_url = itertools.cycle(range(len(self.base_urls)))
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            limits=httpx.Limits(max_connections=self.concurrency * 2),
        )

    @classmethod
    def from_spec(cls, spec: str, tokenizer=None, **opts) -> OpenAIScorer:
        parsed = parse_remote_spec(spec)
        return cls(parsed.model, parsed.base_urls, tokenizer=tokenizer, **opts)

    def __repr__(self) -> str:  # no headers here: the API key must never be printed
        return f"OpenAIScorer(model={self.model!r}, base_urls={list(self.base_urls)!r})"

    def close(self) -> None:
        self._client.close()

    # ---- HTTP -------------------------------------------------------------------------------

    def _pick_url(self) -> str:
        with self._lock:
            return self.base_urls[next(self._next_url)]

    def _post(self, path: str, body: dict, retries: int | None = None) -> dict:
        return self._post_at(path, body, retries)[1]

    def _post_at(self, path: str, body: dict, retries: int | None = None) -> tuple[str, dict]:
        """POST JSON with round-robin, retries and backoff -> (the URL that answered, its JSON);
        a clear UserError when it gives up."""
        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            url = self._pick_url()  # a retry moves on to the next replica
            outcome = self._attempt(url, path, body)
            if not isinstance(outcome, _Transient):
                return url, outcome
            if attempt < retries:
                delay = _delay(self.backoff, attempt, outcome.wait)
                log.warning("target %s failed (%s); retry %d/%d in %.1fs",
                            url, outcome.reason, attempt + 1, retries, delay)  # fmt: skip
                time.sleep(delay)
        raise self._unreachable(retries, outcome.reason)

    def _attempt(self, url: str, path: str, body: dict) -> dict | _Transient:
        """One POST: the JSON answer, a _Transient failure to retry, or a UserError."""
        with self._lock:
            self.requests += 1
        try:
            response = self._client.post(url + path, json=body)
        except httpx.TransportError as err:  # refused, reset, timed out
            return _Transient(f"{type(err).__name__}: {err}".rstrip(": "), None)
        status = response.status_code
        if status in RETRY_STATUS:
            return _Transient(
                f"HTTP {status}: {self._clean(response.text)}", _retry_after(response)
            )
        if status in (401, 403):
            raise UserError(
                f"target server {url} refused the API key (HTTP {status}); "
                f"set ${self.api_key_env} to a valid key"
            )
        if status != 200:
            raise UserError(
                f"target server {url} rejected the request (HTTP {status}: "
                f"{self._clean(response.text)}); check the model name in --target"
            )
        return self._json(url, path, response)

    def _json(self, url: str, path: str, response: httpx.Response) -> dict:
        """The JSON of an HTTP 200, which some servers use to carry an error."""
        try:
            data = response.json()
        except ValueError:
            raise UserError(
                f"target server {url} answered {path} with non-JSON "
                f"({self._clean(response.text, 60)}); point --target at an OpenAI-compatible server"
            ) from None
        if isinstance(data, dict) and data.get("error"):
            raise UserError(
                f"target server {url} answered {path} with an error: "
                f"{self._clean(_error_text(data['error']))} (check the server's log and the "
                "model name in --target)"
            )
        return data

    def _unreachable(self, retries: int, reason: str) -> UserError:
        hint = ""
        if "Timeout" in reason:
            hint = f"; each request may take {self.timeout:g} s (${TIMEOUT_ENV} changes that)"
        return UserError(
            f"target server {', '.join(self.base_urls)} is unreachable after {retries} retries "
            f"({reason}{hint}); start the server or fix --target, then rerun with --resume RUN_DIR"
        )

    def _clean(self, text: str, limit: int = 200) -> str:
        """Server text for a message: one line, and never the API key (some servers echo it)."""
        key = os.environ.get(self.api_key_env, "")
        return _one_line(text.replace(key, "***") if key else text, limit)

    def _map(self, fn: Callable, items: list) -> list:
        """fn over items with at most `concurrency` in flight; the first error stops the rest."""
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        pool = ThreadPoolExecutor(self.concurrency)
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, prompts: list[str], **params) -> list[dict]:
        """One /v1/completions call per chunk of prompts; choices in prompt order."""
        size = self.batch_size if self.capabilities.batch else 1
        chunks = [prompts[i : i + size] for i in range(0, len(prompts), size)]

        def call(chunk: list[str]) -> list[dict]:
            body = {"model": self.model, "prompt": chunk if len(chunk) > 1 else chunk[0]}
            return self._completions(body | params)

        return [choice for chunk in self._map(call, chunks) for choice in chunk]

    def _completions(self, body: dict, retries: int | None = None) -> list[dict]:
        url, data = self._post_at("/v1/completions", body, retries)
        prompts = body["prompt"]
        return self._choices(url, data, len(prompts) if isinstance(prompts, list) else 1)

    def _choices(self, url: str, data: object, n: int) -> list[dict]:
        """A /v1/completions answer's choices, checked and in prompt order."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not all(
            isinstance(c, dict) and isinstance(c.get("text"), str) for c in choices
        ):
            raise UserError(
                f"target server {url} answered /v1/completions without a list of choices with "
                f"text ({self._clean(str(data), 80)}); point --target at an OpenAI-compatible "
                "server"
            )
        if len(choices) != n:
            raise UserError(
                f"target server {url} returned {len(choices)} completions for {n} prompts "
                "(pass batch_size=1 to send this server one prompt per request)"
            )
        indices = [c.get("index") for c in choices]
        if n > 1 and sorted(i if isinstance(i, int) else -1 for i in indices) != [*range(n)]:
            raise UserError(
                f"target server {url} numbered the completions of {n} prompts {indices}, not "
                f"0..{n - 1} once each, so they cannot be matched to the prompts (pass "
                "batch_size=1 to send this server one prompt per request)"
            )
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        for i, choice in enumerate(choices):
            bad = _bad_logprob(choice)
            if bad is not None:
                raise UserError(
                    f"target server {url} returned the log-prob {bad!r} for prompt {i + 1} of "
                    f"{n}; log-probs must be finite and <= 0 (the server's numerics are broken, "
                    "e.g. fp16 overflow: serve the model in bfloat16 or float32, or drop that "
                    "server from --target)"
                )
        return choices

    # ---- capabilities and tokenisation check ------------------------------------------------

    @property
    def capabilities(self) -> _Capabilities:
        if self._caps is None:
            self._caps = self._probe()
        return self._caps

    def _probe(self) -> _Capabilities:
        """Reachability, tokenisation, echo correctness and list-of-prompts support."""
        echo, text = self._probe_echo()
        batch = self._probe_batch([PROBE_TEXT, text])
        mode = "echo" if echo else "forced" if self._label_ids(" yes") is not None else "top-k"
        if mode == "forced":
            log.warning("target %s: echoed prompt log-probs are missing or misaligned; scoring "
                        "labels by forced generation (exact, one request per label token)",
                        self.name)  # fmt: skip
        if mode == "top-k":
            self.approximate = True
            warnings.warn(
                f"target {self.name} does not return usable prompt log-probs (echo); label scores "
                f"are approximate: first label token only, from the top-{self.top_logprobs} "
                "next-token log-probs, with the k-th log-prob as a floor for labels outside them",
                stacklevel=2,
            )
        return _Capabilities(mode=mode, batch=batch)

    def _probe_echo(self) -> tuple[bool, str]:
        """(whether echoed prompt log-probs are right, PROBE_TEXT + its greedy next token)."""
        # The greedy next token after PROBE_TEXT and its log-prob, from the plain (non-echo) path.
        body = {"model": self.model, "prompt": PROBE_TEXT, "max_tokens": 1, "temperature": 0.0}
        nxt = self._completions(body | {"logprobs": 1})[0]
        word = nxt["text"]
        expected = ((nxt.get("logprobs") or {}).get("token_logprobs") or [None])[0]
        # Echo PROBE_TEXT + that token: its echoed log-prob must be the same number.
        text = PROBE_TEXT + word
        body = {"model": self.model, "prompt": text} | _echo_params()
        tokens = _prompt_tokens(self._completions(body)[0], len(text))
        echoed = dict(tokens or []).get(len(PROBE_TEXT))
        if self.tokenizer is not None:
            self._check_tokenizer(len(tokens) - 1 if tokens else None)
        ok = bool(word) and None not in (expected, echoed) and abs(echoed - expected) < 0.05
        return ok, text

    def _probe_batch(self, texts: list[str]) -> bool:
        """Whether the server takes a list of prompts per request. Transient failures are retried
        as for any request; a list that fails twice (or on every attempt) while a single prompt
        succeeds after it is refused by design (llama-cpp-python answers 500), so batching goes
        off."""
        body = {"model": self.model, "prompt": texts} | _echo_params()
        refused = 0
        for attempt in range(self.max_retries + 1):
            url = self._pick_url()
            try:
                outcome = self._attempt(url, "/v1/completions", body)
            except UserError:  # a 4xx: this server does not take lists
                return False
            if not isinstance(outcome, _Transient):
                choices = outcome.get("choices") if isinstance(outcome, dict) else None
                if isinstance(choices, list) and len(choices) != len(texts):
                    return False  # answered the first prompt only
                self._choices(url, outcome, len(texts))  # misnumbered or bad: one-line error
                return True
            single = body | {"prompt": texts[0]}
            refused += not isinstance(self._attempt(url, "/v1/completions", single), _Transient)
            if refused == 2:
                break
            if attempt < self.max_retries:
                time.sleep(_delay(self.backoff, attempt, outcome.wait))
        if not refused:  # single prompts failed as well: the server is down
            raise self._unreachable(self.max_retries, outcome.reason)
        log.info("target %s refuses lists of prompts (%s); sending one prompt per request",
                 url, outcome.reason)  # fmt: skip
        return False

    def _label_ids(self, word: str) -> list[int] | None:
        """Token ids of a label word: local tokenizer, else the server's tokenize endpoint."""
        if self.tokenizer is not None:
            return list(self.tokenizer(word, add_special_tokens=False).input_ids)
        if word not in self._word_ids:
            self._word_ids[word] = self._server_token_ids(word)
        return self._word_ids[word]

    def _check_tokenizer(self, echoed_count: int | None) -> None:
        """Compare the server's tokenisation of PROBE_TEXT with the local tokenizer's."""
        local = list(self.tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids)
        special = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id} - {None}
        remote = self._server_token_ids(PROBE_TEXT)
        if remote is not None:
            remote = [t for t in remote if t not in special]  # BOS policy is not a mismatch
            if remote != local:
                raise UserError(
                    f"target {self.name} tokenises a probe string differently from the local "
                    f"tokenizer (server ids {remote[:12]}..., local {local[:12]}...); serve the "
                    "same model as the local tokenizer, or do not pass a local tokenizer"
                )
        elif echoed_count and echoed_count not in (len(local), len(local) + 1):
            raise UserError(
                f"target {self.name} splits a probe string into {echoed_count} tokens but the "
                f"local tokenizer into {len(local)}; serve the same model as the local tokenizer"
            )

    def _server_token_ids(self, text: str) -> list[int] | None:
        """Token ids from whichever tokenize endpoint the server has, else None."""
        candidates = [
            ("/tokenize", {"content": text, "add_special": False}),  # llama.cpp llama-server
            ("/extras/tokenize", {"input": text}),  # llama-cpp-python
            (
                "/tokenize",
                {"model": self.model, "prompt": text, "add_special_tokens": False},
            ),  # vLLM
        ]
        for path, body in candidates:
            try:
                answer = self._post(path, body, retries=0)
            except UserError:
                continue
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                return tokens
        return None

    # ---- scoring and generation -------------------------------------------------------------

    def _score_pairs(self, pairs, template, label_words):
        mode = self.capabilities.mode
        if mode == "echo":
            return self._score_echo(pairs, template, label_words)
        if mode == "forced":
            return self._score_forced(pairs, template, label_words)
        return self._score_top_k(pairs, template, label_words)

    def _score_echo(self, pairs, template, label_words) -> torch.Tensor:
        contexts = [fill_template(template, p, x) for p, x in pairs]
        texts = [c + w for c in contexts for w in label_words]
        choices = self._complete(texts, **_echo_params())
        scores = []
        for i, choice in enumerate(choices):
            context, text = contexts[i // len(label_words)], texts[i]
            tokens = _prompt_tokens(choice, len(text))
            if tokens is None:
                raise UserError(f"target {self.name} returned no prompt log-probs for {text!r}")
            label = [lp for start, lp in tokens if start >= len(context)]
            starts = [start for start, _ in tokens]
            if len(context) not in starts:  # a token spans context and label: count it in
                self.boundary_merges += 1
                label = [tokens[max(0, _last_before(starts, len(context)))][1], *label]
            if not label or any(lp is None for lp in label):
                raise UserError(f"target {self.name} gave no log-prob for the label in {text!r}")
            scores.append(sum(label))
        return torch.tensor(scores, dtype=torch.float32).view(len(pairs), len(label_words))

    def _score_forced(self, pairs, template, label_words) -> torch.Tensor:
        """Generate each label token under logit_bias +100 and sum the raw log-probs reported."""
        contexts = [fill_template(template, p, x) for p, x in pairs]
        out = torch.zeros(len(pairs), len(label_words))
        for c, word in enumerate(label_words):
            ids = self._label_ids(word)
            if not ids:
                raise UserError(f"label word {word!r} has no tokens on target {self.name}")
            for k, token in enumerate(ids):
                # Text, not ids: the label's first k tokens are spelt out after the context.
                head = self.tokenizer.decode(ids[:k]) if self.tokenizer is not None else ""
                if k and self.tokenizer is None:
                    raise UserError(f"multi-token label {word!r} needs a local tokenizer here")
                params = {"max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                          "logit_bias": {str(token): 100}}  # fmt: skip
                choices = self._complete([ctx + head for ctx in contexts], **params)
                forced = self.tokenizer.decode([token]) if self.tokenizer is not None else None
                for i, choice in enumerate(choices):
                    values = (choice.get("logprobs") or {}).get("token_logprobs") or [None]
                    if values[0] is None:
                        raise UserError(f"target {self.name} returned no log-prob for {word!r}")
                    if forced is not None and choice["text"] != forced:
                        raise UserError(
                            f"target {self.name} ignored logit_bias (generated "
                            f"{choice['text']!r}, not {forced!r}); it cannot score labels exactly"
                        )
                    out[i, c] += values[0]
        return out

    def _score_top_k(self, pairs, template, label_words) -> torch.Tensor:
        contexts = [fill_template(template, p, x) for p, x in pairs]
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs}
        choices = self._complete(contexts, **params)
        out = torch.empty(len(pairs), len(label_words))
        for i, choice in enumerate(choices):
            top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
            if not top:
                raise UserError(f"target {self.name} returned no top_logprobs; it cannot score")
            floor = min(top.values())
            for c, word in enumerate(label_words):
                first = self._first_token_text(word)
                out[i, c] = top.get(first, floor)
        return out

    def _first_token_text(self, word: str) -> str:
        if self.tokenizer is None:
            return word  # best guess without a tokenizer: the word is one token
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        return self.tokenizer.decode(ids[:1])

    def _generate(self, texts, max_new_tokens, stop):
        params = {"max_tokens": max_new_tokens, "temperature": 0.0}
        if stop:
            params["stop"] = [stop]
        choices = self._complete(list(texts), **params)
        return [c["text"].split(stop)[0] if stop else c["text"] for c in choices]


def _echo_params() -> dict:
    # max_tokens=1, not 0: llama-cpp-python reads 0 as "until the context is full", and one
    # sampled token costs no extra forward pass after the prefill on any engine.
    return {"echo": True, "max_tokens": 1, "logprobs": 1, "temperature": 0.0}


def _prompt_tokens(choice: dict, prompt_chars: int) -> list[tuple[int, float | None]] | None:
    """(character offset, log-prob) of each echoed token inside the first `prompt_chars`."""
    logprobs = choice.get("logprobs") or {}
    offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
    if not offsets or values is None or offsets[0] != 0:
        return None  # no echo: offsets start after the prompt
    return [(o, v) for o, v in zip(offsets, values) if o < prompt_chars]


def _bad_logprob(choice: dict) -> object | None:
    """The first log-prob in a choice that is not a finite number <= 0 (within rounding)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None  # no log-probs: the caller says what it missed
    values = list(logprobs.get("token_logprobs") or [])
    for top in logprobs.get("top_logprobs") or []:
        values += list(top.values()) if isinstance(top, dict) else []
    for value in values:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value) and value <= LOGPROB_SLACK):
            return value
    return None


def _error_text(error: object) -> str:
    """The message of an OpenAI-style error: `{"message": ...}` or a plain string."""
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error)


def _delay(backoff: float, attempt: int, wait: float | None) -> float:
    """The server's Retry-After if it gave one, else exponential backoff capped at 30 s."""
    return wait if wait is not None else min(backoff * 2**attempt, 30.0)


def _last_before(starts: list[int], position: int) -> int:
    return max(i for i, s in enumerate(starts) if s < position)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return None


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line[:limit] + ("..." if len(line) > limit else "")
