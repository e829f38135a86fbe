"""OpenAIScorer: a stub server on loopback for the HTTP logic, and a real llama.cpp server (slow).

The real-server tests need `llama-cpp-python[server]` (scripts/build_llama_cpp.sh builds it) and
serve the smollm2-135m GGUF on a free 127.0.0.1 port.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.models.remote import OpenAIScorer, parse_remote_spec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SECRET = "sk-test-DO-NOT-LEAK-4242"


# ---- a fake OpenAI-compatible server: one token per character, log-prob -0.5 each -------------
# State knobs for bad answers: `logprob` (the value every log-prob takes), `indices` (maps the
# choices' `index` fields, in answer order), `reverse` (answer choices last first), `error_body`
# (an HTTP 200 carrying {"error": ...}), `list_fail` (fail that many list requests with
# `status`), `hang` (seconds to wait before answering).


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        stub = self.server.stub
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stub["seen"].append((self.path, self.headers.get("Authorization"), body))
        time.sleep(stub["hang"])
        if stub["fail"] > 0:
            stub["fail"] -= 1
            return self._send(stub["status"], {"error": "overloaded"})
        if self.path == "/extras/tokenize" and stub["tokens"] is not None:
            return self._send(200, {"tokens": stub["tokens"]})
        if self.path != "/v1/completions":
            return self._send(404, {"detail": "Not Found"})
        if stub["error_body"] is not None:
            return self._send(200, {"error": stub["error_body"]})
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if len(prompts) > 1 and not stub["batch"]:
            return self._send(500, {"error": "one prompt per request"})
        if len(prompts) > 1 and stub["list_fail"] > 0:
            stub["list_fail"] -= 1
            return self._send(stub["status"], {"error": "busy"})
        choices = [self._choice(i, p, body) for i, p in enumerate(prompts)]
        choices = choices[::-1] if stub["reverse"] else choices
        for choice, index in zip(choices, stub["indices"]([c["index"] for c in choices])):
            choice["index"] = index
            if index is None:
                del choice["index"]
        self._send(200, {"choices": choices})

    def _choice(self, index, prompt, body):
        stub = self.server.stub
        if body.get("echo") and stub["echo"]:
            offsets = list(range(len(prompt) + 1))  # + the one generated token
            values = [None] + [-0.7 if stub["shifted"] else stub["logprob"]] * len(prompt)
            logprobs = {"text_offset": offsets, "token_logprobs": values}
            return {"index": index, "text": prompt + "!", "logprobs": logprobs}
        if body.get("logit_bias"):  # forced generation: the biased token, log-prob -1
            token = int(next(iter(body["logit_bias"])))
            logprobs = {"text_offset": [len(prompt)], "token_logprobs": [-1.0]}
            return {"index": index, "text": stub["decode"]([token]), "logprobs": logprobs}
        top = {" good": -0.5, " bad": -2.0, " meh": -3.0}
        logprobs = {"text_offset": [len(prompt)], "token_logprobs": [stub["logprob"]],
                    "top_logprobs": [top]}  # fmt: skip
        text = " good\nmore" if body.get("max_tokens", 1) > 1 else " good"
        return {"index": index, "text": text, "logprobs": logprobs}

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that timed out hung up: fine
        pass


@pytest.fixture
def stub():
    """Start a stub; returns (base_url, state). Tests tweak state (fail, echo, batch, tokens)."""
    servers = []

    def start(**state):
        server = _Server(("127.0.0.1", 0), _Handler)
        server.stub = {"seen": [], "fail": 0, "status": 503, "echo": True, "batch": True,
                       "tokens": None, "shifted": False, "decode": None, "logprob": -0.5,
                       "indices": lambda i: i, "reverse": False, "error_body": None,
                       "list_fail": 0, "hang": 0.0} | state  # fmt: skip
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", server.stub

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- fast unit tests ------------------------------------------------------------------------


def test_parse_remote_spec():
    spec = parse_remote_spec("openai:org/model@http://127.0.0.1:8000/v1,http://127.0.0.1:8001/")
    assert spec.model == "org/model"
    assert spec.base_urls == ("http://127.0.0.1:8000", "http://127.0.0.1:8001")
    for bad in ("vllm:m@http://x", "openai:m", "openai:@http://x", "openai:m@127.0.0.1:8000"):
        with pytest.raises(UserError, match="--target openai:"):
            parse_remote_spec(bad)


def test_scores_are_summed_label_logprobs_in_batches(stub):
    url, state = stub()
    scorer = OpenAIScorer("m", [url], batch_size=3, concurrency=2)
    scores = scorer.score(["p1", "p2"], ["x1", "x2"], "{input} {prompt} =", [" ab", " abcd"])
    assert scores.shape == (2, 2, 2)
    assert torch.equal(scores[..., 0], torch.full((2, 2), -1.5))  # 3 characters
    assert torch.equal(scores[..., 1], torch.full((2, 2), -2.5))
    sent = [b["prompt"] for p, _, b in state["seen"][3:]]  # after the three probe requests
    assert sorted(len(p) for p in sent) == [2, 3, 3]  # 8 sequences in chunks of 3
    assert not scorer.approximate


def test_cache_hits_make_no_requests(stub):
    url, state = stub()
    scorer = OpenAIScorer("m", [url])
    first = scorer.score(["p"], ["x", "y"], "{prompt} {input}", [" a", " b"])
    before = len(state["seen"])
    again = scorer.score(["p"], ["y", "x"], "{prompt} {input}", [" a", " b"])
    assert len(state["seen"]) == before and scorer.computed == 2 and scorer.calls == 4
    assert torch.equal(again.flip(1), first)


def test_round_robin_over_base_urls(stub):
    (url_a, a), (url_b, b) = stub(), stub()
    scorer = OpenAIScorer("m", [url_a, url_b], concurrency=1, batch_size=1)
    assert [scorer._pick_url() for _ in range(4)] == [url_a, url_b, url_a, url_b]
    scorer.generate(["t1", "t2", "t3", "t4"])
    assert abs(len(a["seen"]) - len(b["seen"])) <= 1 and len(b["seen"]) >= 2


def test_backoff_retries_a_503_then_succeeds(stub, caplog):
    url, state = stub(fail=2, status=503)
    scorer = OpenAIScorer("m", [url], backoff=0.01, max_retries=3)
    with caplog.at_level(logging.WARNING):
        assert scorer.generate(["hi"], max_new_tokens=4) == [" good"]
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2
    assert scorer.requests >= 3


def test_gives_up_with_a_one_line_error(stub):
    url, _ = stub(fail=10**6, status=503)
    scorer = OpenAIScorer("m", [url], backoff=0.01, max_retries=2)
    with pytest.raises(UserError) as err:
        scorer.score(["p"], ["x"], "{prompt} {input}", [" a", " b"])
    message = str(err.value)
    assert "\n" not in message and "unreachable after 2 retries" in message
    assert url in message and "--resume RUN_DIR" in message
    dead = OpenAIScorer("m", [f"http://127.0.0.1:{free_port()}"], backoff=0.01, max_retries=1)
    with pytest.raises(UserError, match="unreachable after 1 retries .*ConnectError"):
        dead.generate(["x"])


def test_client_errors_are_not_retried(stub):
    url, state = stub(fail=1, status=400)
    scorer = OpenAIScorer("m", [url], backoff=0.01)
    with pytest.raises(UserError, match="rejected the request \\(HTTP 400"):
        scorer.generate(["x"])
    assert len(state["seen"]) == 1


def test_api_key_is_sent_but_never_shown(stub, caplog, monkeypatch):
    monkeypatch.setenv("STUB_KEY", SECRET)
    url, state = stub(fail=1, status=429)
    scorer = OpenAIScorer("m", [url], api_key_env="STUB_KEY", backoff=0.01, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        scorer.generate(["x"])
        state["fail"], state["status"] = 10, 401
        with pytest.raises(UserError) as err:
            scorer.generate(["y"])
    assert all(auth == f"Bearer {SECRET}" for _, auth, _ in state["seen"])
    assert "$STUB_KEY" in str(err.value)
    shown = [repr(scorer), str(scorer.__dict__.keys()), str(err.value), caplog.text]
    assert not any(SECRET in text for text in shown)


def test_without_echo_falls_back_to_top_k_with_a_floor(stub):
    url, _ = stub(echo=False)
    scorer = OpenAIScorer("m", [url])
    with pytest.warns(UserWarning, match="approximate"):
        scores = scorer.score(["p"], ["x"], "{prompt} {input}", [" good", " bad", " great"])
    assert scorer.approximate
    assert scores.flatten().tolist() == pytest.approx([-0.5, -2.0, -3.0])  # " great": floor


def test_misaligned_echo_falls_back_to_forced_generation(stub, tiny_tokenizer):
    from stableprompt.models.remote import PROBE_TEXT

    ids = list(tiny_tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids)
    url, _ = stub(shifted=True, decode=tiny_tokenizer.decode, tokens=ids)
    scorer = OpenAIScorer("m", [url], tokenizer=tiny_tokenizer)
    scores = scorer.score(["p"], ["x"], "{prompt} {input}", [" good", " superb"])
    n_superb = len(tiny_tokenizer(" superb", add_special_tokens=False).input_ids)
    assert scorer.capabilities.mode == "forced" and not scorer.approximate and n_superb > 1
    assert scores.flatten().tolist() == [-1.0, -float(n_superb)]  # -1 per forced token


def test_single_prompt_servers_get_one_sequence_per_request(stub):
    url, state = stub(batch=False)  # answers a list with HTTP 500, like llama-cpp-python
    scorer = OpenAIScorer("m", [url], batch_size=8, backoff=0.01)
    assert not scorer.capabilities.batch
    assert len(state["seen"]) == 6  # 2 echo probes, then list, single, list, single
    probed = len(state["seen"])
    scorer.score(["p"], ["x", "y"], "{prompt} {input}", [" a", " b"])
    assert all(isinstance(b["prompt"], str) for _, _, b in state["seen"][probed:])
    assert not OpenAIScorer("m", [url], max_retries=0).capabilities.batch  # no retry: still off


def test_tokenizer_mismatch_is_a_clear_error(stub, tiny_tokenizer):
    from stableprompt.models.remote import PROBE_TEXT

    ids = tiny_tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    url, state = stub(tokens=list(ids))
    assert OpenAIScorer("m", [url], tokenizer=tiny_tokenizer).capabilities.mode == "echo"
    state["tokens"] = [5, 6, 7]
    with pytest.raises(UserError, match="tokenises a probe string differently"):
        _ = OpenAIScorer("m", [url], tokenizer=tiny_tokenizer).capabilities


# ---- a server that cannot be trusted: every bad answer is one line naming the server -------


def one_line_error(scorer: OpenAIScorer, call=None) -> str:
    """The UserError of `call` (default: score two inputs with two labels), checked one line."""
    call = call or (lambda: scorer.score(["p"], ["x", "yy"], "{prompt} {input}", [" a", " bb"]))
    with pytest.raises(UserError) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("value", [float("nan"), 0.7, float("inf")])
def test_nan_or_positive_logprobs_are_refused(stub, value):
    url, state = stub()
    scorer = OpenAIScorer("m", [url])
    assert scorer.capabilities.mode == "echo"
    state["logprob"] = value  # the server goes bad mid-run
    message = one_line_error(scorer)
    assert message.startswith(f"target server {url} returned the log-prob {value!r} for prompt")
    assert "must be finite and <= 0" in message and "bfloat16 or float32" in message


def test_a_bad_logprob_in_the_top_k_fallback_is_refused(stub):
    url, _ = stub(echo=False, logprob=float("nan"))
    message = one_line_error(OpenAIScorer("m", [url]))
    assert f"target server {url} returned the log-prob nan" in message


def test_reordered_choices_are_matched_by_their_index(stub):
    url, state = stub(reverse=True)  # choices come last first, each with its right index
    scores = OpenAIScorer("m", [url]).score(["p"], ["x", "yy"], "{prompt} {input}", [" a", " bb"])
    assert scores.flatten().tolist() == [-1.0, -1.5, -1.0, -1.5]  # -0.5 per label character
    assert any(isinstance(b["prompt"], list) and len(b["prompt"]) == 4 for _, _, b in state["seen"])


@pytest.mark.parametrize(
    "indices, shown",
    [(lambda i: [None] * len(i), "[None, None]"), (lambda i: [0] * len(i), "[0, 0]")],
    ids=["missing", "duplicated"],
)
def test_choices_without_distinct_indices_are_refused(stub, indices, shown):
    url, _ = stub(reverse=True, indices=indices)
    message = one_line_error(OpenAIScorer("m", [url]))
    assert message.startswith(f"target server {url} numbered the completions of 2 prompts {shown}")
    assert "batch_size=1" in message


def test_a_single_choice_needs_no_index(stub):
    url, state = stub(batch=False)  # one prompt per request, like llama-cpp-python
    scorer = OpenAIScorer("m", [url], backoff=0.01)
    state["indices"] = lambda i: [None] * len(i)
    assert scorer.generate(["x", "y"]) == [" good", " good"]


@pytest.mark.parametrize(
    "error, shown",
    [
        ({"message": "The model `m` does not exist", "type": "invalid_request_error"},
         "The model `m` does not exist"),
        ("CUDA out of memory", "CUDA out of memory"),
    ],
)  # fmt: skip
def test_an_error_body_with_http_200_is_a_one_line_error(stub, error, shown):
    url, _ = stub(error_body=error)
    message = one_line_error(OpenAIScorer("m", [url]))
    assert message == (
        f"target server {url} answered /v1/completions with an error: {shown} "
        "(check the server's log and the model name in --target)"
    )


def test_an_error_body_never_shows_the_api_key(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    url, _ = stub(error_body=f"Incorrect API key provided: {SECRET}")
    message = one_line_error(OpenAIScorer("m", [url]))
    assert SECRET not in message and "Incorrect API key provided: ***" in message


@pytest.mark.parametrize("status", [500, 429])
def test_a_transient_failure_of_the_batch_probe_keeps_batching(stub, status):
    url, state = stub(list_fail=1, status=status)
    scorer = OpenAIScorer("m", [url], backoff=0.01)
    assert scorer.capabilities.batch
    probed = len(state["seen"])
    scorer.score(["p"], ["x", "y"], "{prompt} {input}", [" a", " b"])
    assert len(state["seen"]) - probed == 1  # 4 sequences in one request, not 4 requests


def test_request_timeout_comes_from_the_argument_or_the_environment(stub, monkeypatch):
    url, _ = stub(hang=1.0)
    monkeypatch.setenv("STABLEPROMPT_REQUEST_TIMEOUT", "0.2")
    scorer = OpenAIScorer("m", [url], max_retries=1, backoff=0.01)
    assert scorer.timeout == 0.2 and OpenAIScorer("m", [url], timeout=7).timeout == 7
    start = time.monotonic()
    message = one_line_error(scorer, lambda: scorer.generate(["x"]))
    assert time.monotonic() - start < 1.5  # two 0.2 s attempts, not two 120 s ones
    assert "unreachable after 1 retries (ReadTimeout" in message
    assert "each request may take 0.2 s ($STABLEPROMPT_REQUEST_TIMEOUT changes that)" in message
    monkeypatch.setenv("STABLEPROMPT_REQUEST_TIMEOUT", "soon")
    with pytest.raises(UserError, match="STABLEPROMPT_REQUEST_TIMEOUT='soon' is not a positive"):
        OpenAIScorer("m", [url])
    monkeypatch.delenv("STABLEPROMPT_REQUEST_TIMEOUT")
    assert OpenAIScorer("m", [url]).timeout == 120.0


@pytest.mark.parametrize(
    "state, expected",
    [
        ({"logprob": float("nan")}, "returned the log-prob nan for prompt 1 of 1"),
        ({"reverse": True, "indices": lambda i: [None] * len(i)}, "numbered the completions"),
        ({"error_body": "server exploded"}, "with an error: server exploded"),
    ],
    ids=["nan", "no-index", "error-body"],
)
def test_the_cli_turns_a_bad_server_answer_into_one_line_and_exit_2(stub, capsys, state, expected):
    from stableprompt.cli import main

    url, _ = stub(**state)
    argv = ["eval", "--target", f"openai:m@{url}", "--label-words", "task",
            "--reference-lm", "none"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: target server {url} ")
    assert expected in err and "Traceback" not in err


# ---- a real llama.cpp server (llama-cpp-python) ---------------------------------------------


class LlamaServer:
    """`python -m llama_cpp.server` serving a GGUF on 127.0.0.1; start() waits until ready."""

    def __init__(self, gguf: Path, port: int, log_path: Path):
        self.gguf, self.port, self.log_path = gguf, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
               "--logits_all", "true", "--n_threads", "2", "--verbose", "false"]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited; see {self.log_path}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"llama.cpp server not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def smollm_gguf():
    from stableprompt.models.loading import ALIASES, fetch_alias_gguf

    return fetch_alias_gguf(ALIASES["smollm2-135m"])


@pytest.fixture(scope="session")
def llama_server(smollm_gguf, tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    server = LlamaServer(smollm_gguf, free_port(), log_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_smollm():
    from stableprompt.models.loading import load_lm

    return load_lm("smollm2-135m", dtype="float32")


def sst2_rows(n: int) -> list[tuple[str, int]]:
    path = SHARED_DATA / "fsc" / "16-shot" / "sst-2" / "16-42" / "train.tsv"
    if not path.exists():
        pytest.skip(f"SST-2 few-shot data not found at {path}")
    lines = path.read_text().splitlines()[1:]
    rows = [(line.rsplit("\t", 1)[0], int(line.rsplit("\t", 1)[1])) for line in lines]
    return rows[: n // 2] + rows[-(n - n // 2) :]  # both classes


TEMPLATE = "Review: {input} {prompt} Sentiment:"
LABELS = [" terrible", " great"]
PROMPTS = ["Overall it was", "In short, the film is"]


def segmentwise_equals_whole(tokenizer, prompt: str, text: str) -> bool:
    """LocalScorer's segment-wise token ids equal the server's whole-string ones."""
    from stableprompt.models.scoring import split_template

    head, rest = split_template(TEMPLATE, prompt, text)
    for label in LABELS:
        parts = tokenizer(head).input_ids + tokenizer(rest, add_special_tokens=False).input_ids
        parts += tokenizer(label, add_special_tokens=False).input_ids
        if parts != tokenizer(head + rest + label).input_ids:
            return False
    return True


@pytest.mark.slow
@pytest.mark.remote
def test_server_label_logprobs_match_local_scorer(llama_server, local_smollm):
    from stableprompt.models.scoring import LocalScorer

    model, tokenizer = local_smollm
    rows = [r for r in sst2_rows(8) if all(segmentwise_equals_whole(tokenizer, p, r[0])
                                            for p in PROMPTS)]  # fmt: skip
    assert len(rows) >= 6, "too few examples where both tokenisations agree"
    inputs = [text for text, _ in rows]
    remote = OpenAIScorer("smollm2-135m", [llama_server.url], tokenizer=tokenizer, concurrency=2)
    served = remote.score(PROMPTS, inputs, TEMPLATE, LABELS)
    local = LocalScorer(model, tokenizer).score(PROMPTS, inputs, TEMPLATE, LABELS)
    assert not remote.approximate and remote.boundary_merges == 0
    diff = (served - local).abs()
    print(f"\nmax |server - local| = {diff.max():.4f} nats, mean {diff.mean():.4f}")
    # Q4_1 weights on the server vs the dequantised fp32 copy locally: close, not identical.
    assert diff.max() < 0.5
    assert torch.equal(served.argmax(-1), local.argmax(-1))


@pytest.mark.slow
@pytest.mark.remote
def test_server_generate_and_cache(llama_server, local_smollm):
    _, tokenizer = local_smollm
    remote = OpenAIScorer("smollm2-135m", [llama_server.url], tokenizer=tokenizer)
    out = remote.generate(["The capital of France is"], max_new_tokens=8, stop="\n")
    assert isinstance(out[0], str) and "\n" not in out[0] and out[0]
    remote.score(PROMPTS[:1], ["a fine film ."], TEMPLATE, LABELS)
    sent = remote.requests
    remote.score(PROMPTS[:1], ["a fine film ."], TEMPLATE, LABELS)
    assert remote.requests == sent


@pytest.mark.slow
@pytest.mark.remote
def test_killed_server_retries_then_fails_and_restart_recovers(
    llama_server, local_smollm, caplog, monkeypatch
):
    _, tokenizer = local_smollm
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    remote = OpenAIScorer("smollm2-135m", [llama_server.url], tokenizer=tokenizer,
                          backoff=0.05, max_retries=3)  # fmt: skip
    before = remote.score(PROMPTS[:1], ["a fine film ."], TEMPLATE, LABELS)
    llama_server.proc.send_signal(signal.SIGKILL)  # dies mid-run, like a crashed replica
    llama_server.proc.wait()
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as err:
        remote.score(PROMPTS[:1], ["a dull film ."], TEMPLATE, LABELS)
    message = str(err.value)
    assert "\n" not in message and "unreachable after 3 retries" in message
    assert "--resume RUN_DIR" in message
    assert sum("retry" in r.getMessage() for r in caplog.records) == 3
    assert SECRET not in message + caplog.text + repr(remote)
    llama_server.start()  # the session fixture's server is back for later tests
    after = remote.score(PROMPTS[:1], ["a fine film .", "a dull film ."], TEMPLATE, LABELS)
    assert torch.equal(after[:, :1], before)  # the first came from the cache
    assert os.environ["OPENAI_API_KEY"] == SECRET


def _write_kshot_dir(root: Path, n: int) -> Path:
    """A tiny LM-BFF style directory (n rows per split, both classes) from the SST-2 train file."""
    rows = sst2_rows(3 * n)
    root.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "dev", "test")):
        part = rows[i::3][:n]
        lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in part]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.remote
def test_sql_run_survives_a_server_crash_with_resume(llama_server, tmp_path):
    """Train SQL against the server, kill it mid-run (one-line error, exit 2), restart, resume."""
    data, out = _write_kshot_dir(tmp_path / "data", 4), tmp_path / "run"
    target = f"openai:smollm2-135m@{llama_server.url}"
    cmd = [sys.executable, "-m", "stableprompt.cli", "train", "--no-progress"]
    flags = ["--algo", "sql", "--task", "sst-2", "--data", str(data), "--target", target,
             "--agent", "smollm2-135m", "--steps", "4", "--eval-every", "1", "--save-every", "1",
             "--prompt-length", "2", "--prompts-per-step", "2", "--pool-size", "2",
             "--out", str(out)]  # fmt: skip
    run = subprocess.Popen(cmd + flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not latest.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, run.communicate()[1][-2000:]
    llama_server.proc.send_signal(signal.SIGKILL)
    llama_server.proc.wait()
    _, stderr = run.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2, stderr[-2000:]
    assert len(errors) == 1 and "unreachable after 5 retries" in errors[0]
    assert "--resume RUN_DIR" in errors[0] and "Traceback" not in stderr
    llama_server.start()
    resumed = subprocess.run(
        cmd + ["--resume", str(out)], capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "best_prompts.json").read_text())
    assert summary["steps"] == 4 and summary["best_prompt"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5))  # each step logged once across the crash


def test_non_json_answer_is_a_clear_error(monkeypatch):
    import httpx

    from stableprompt.errors import UserError
    from stableprompt.models.remote import OpenAIScorer

    scorer = OpenAIScorer("m", ["http://stub"], max_retries=0)
    html = httpx.Response(200, text="<html>hello</html>")
    monkeypatch.setattr(scorer._client, "post", lambda *a, **k: html)
    with pytest.raises(UserError, match="non-JSON"):
        scorer._post("/v1/completions", {})
