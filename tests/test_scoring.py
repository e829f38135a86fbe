"""The scoring engine must give the same numbers as one full forward pass per sequence."""

import copy

import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.models import scoring
from stableprompt.models.compat import (
    GROUPED_SDPA,
    cache_kwarg,
    few_row_linears,
    head_logits,
    output_cache,
    use_grouped_sdpa,
)
from stableprompt.models.loading import load_lm
from stableprompt.models.scoring import (
    LocalScorer,
    NaiveScorer,
    greedy_generate,
    padded_batches,
    plain_greedy,
    prefix_chunks,
    split_template,
)

from .conftest import tiny_llama

PROMPTS = ["the movie", "not very fun plot", "Review", "it is", "acting was okay but"]
INPUTS = ["the film was great!", "boring", "I hate it, the plot is bad.", "fun"]


@pytest.mark.parametrize(
    "template",
    [
        "{input} {prompt}",
        "{prompt}\nInput: {input}\nOutput:",
        "Review: {input} {prompt} Sentiment:",
        # a long constant head (in-context demos)
        "the film was fun. It was good\nI hate the plot. It was bad\n{input} {prompt}",
        # solved pairs under the prompt (--target-shots): the prompt repeats before the input
        "{prompt}\nInput: fun\nOutput: good\n{prompt}\nInput: {input}\nOutput:",
    ],
)
@pytest.mark.parametrize(
    "labels",
    [
        (" terrible", " great"),  # " great" spells out in 2 tokens
        (" good", " bad", " okay"),  # all single tokens
        (" superb", " awful"),
    ],
)  # many tokens each
def test_engine_matches_naive_forward(tiny_lm, template, labels):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer, prefix_batch_size=3, suffix_batch_size=5)
    naive = NaiveScorer(model, tokenizer)
    fast = engine.score(PROMPTS, INPUTS, template, list(labels))
    slow = naive.score(PROMPTS, INPUTS, template, list(labels))
    assert fast.shape == (len(PROMPTS), len(INPUTS), len(labels))
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    assert (fast < 0).all()


def tiny_gemma3(tokenizer, sliding_window: int, sharp: bool = False):
    """A tiny random Gemma 3, which mixes sliding-window and full-attention layers; `sharp`:
    with peaked attention, so that a dropped token or a wrong mask changes its outputs."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    model = Gemma3ForCausalLM(config).eval()
    if sharp:  # Gemma normalises queries and keys: scale the norms, not the projections
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_norm.weight.fill_(5.0)
                layer.self_attn.k_norm.weight.fill_(5.0)
    return model


def test_engine_matches_naive_forward_on_gemma3_sliding_layers(tiny_tokenizer):
    """Gemma 3 mixes sliding-window and full-attention layers: the scorer writes suffixes in
    place after the prefix in the full ones and leaves the sliding ones to transformers."""
    # a window longer than every test sequence: sliding = full attention here
    model = tiny_gemma3(tiny_tokenizer, sliding_window=64)
    engine = LocalScorer(model, tiny_tokenizer, prefix_batch_size=3, suffix_batch_size=5)
    args = PROMPTS, INPUTS, "{input} {prompt}", [" terrible", " great"]
    fast, slow = engine.score(*args), NaiveScorer(model, tiny_tokenizer).score(*args)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    # a prompt written per input: each row (prefix 12 + suffix 6, 1 + 20 tokens) fits in 28,
    # but one batch would lay them out as 12 + 20 and the sliding layers would drop tokens
    pairs = [("acting was okay but the plot", "fun"), ("it", "I hate it, the plot is bad.")]
    args = pairs, "{prompt} {input} It was", [" terrible", " great"]
    model = tiny_gemma3(tiny_tokenizer, sliding_window=28, sharp=True)
    fast = LocalScorer(model, tiny_tokenizer).score_pairs(*args)
    torch.testing.assert_close(fast, NaiveScorer(model, tiny_tokenizer).score_pairs(*args))
    # an input of 18 tokens after its prompt would lose its first KV
    short = LocalScorer(tiny_gemma3(tiny_tokenizer, sliding_window=16), tiny_tokenizer)
    with pytest.raises(UserError, match=r"is \d+ tokens, beyond the 16-token sliding attention"):
        short.score(PROMPTS, ["a long input " * 6], "{input} {prompt}", [" great"])
    with pytest.raises(UserError, match="beyond the 16-token sliding attention window"):
        short.score(["a long prompt " * 2], ["fun"], "{prompt} {input}", [" great"])


def test_padded_batches_cut_where_padding_grows():
    def spans(lengths, max_rows, **kw):
        return [(b.start, b.stop) for b in padded_batches(lengths, max_rows, **kw)]

    # 3 x 10 real = 30 tokens; adding the 20 would pad to 80 > 1.1 x 50
    assert spans([10, 10, 10, 20, 20], 8, min_tokens=0) == [(0, 3), (3, 5)]
    assert spans([10, 10, 10, 20, 20], 8, min_tokens=60) == [(0, 5)]  # too small to cut
    assert spans([5] * 7, 3) == [(0, 3), (3, 6), (6, 7)]  # the row cap
    assert spans([10, 30, 10, 10], 8, min_tokens=0) == [(0, 1), (1, 2), (2, 4)]  # any order
    # defaults: slack 1.1, and no cut before a batch holds 256 real tokens
    assert spans([20] * 10 + [60] * 10, 128) == [(0, 11), (11, 20)]
    assert spans([], 4) == []


def test_engine_matches_naive_forward_in_small_batches(tiny_lm, monkeypatch):
    """Every suffix batch cut by padding still scores as a plain forward does."""
    model, tokenizer = tiny_lm
    cut = [0]

    def small(lengths, max_rows):
        batches = padded_batches(lengths, max_rows, min_tokens=0)
        cut[0] = max(cut[0], len(batches))
        return batches

    monkeypatch.setattr(scoring, "padded_batches", small)
    template = "{prompt}\nInput: {input}\nOutput:"
    fast = LocalScorer(model, tokenizer).score(PROMPTS, INPUTS, template, [" good", " bad"])
    slow = NaiveScorer(model, tokenizer).score(PROMPTS, INPUTS, template, [" good", " bad"])
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    assert cut[0] > 1


def test_cache_skips_repeated_pairs(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer)
    first = engine.score(PROMPTS[:2], INPUTS, "{input} {prompt}", [" good", " bad"])
    assert engine.computed == 8
    again = engine.score(PROMPTS[:3], INPUTS, "{input} {prompt}", [" good", " bad"])
    assert engine.computed == 12 and engine.calls == 20
    torch.testing.assert_close(again[:2], first)


def test_split_template_puts_first_placeholder_in_prefix():
    assert split_template("{input} {prompt} It was", "P", "X") == ("X", " P It was")
    assert split_template("Q: {prompt}\n{input}", "P", "X") == ("Q: P", "\nX")
    with pytest.raises(UserError, match="must contain both"):
        split_template("{input} only", "P", "X")
    # repeats of the first placeholder before the other one stay in the shared prefix
    shots = "{prompt}\nIn: a\nOut: b\n{prompt}\nIn: {input}\nOut:"
    assert split_template(shots, "P", "X") == ("P\nIn: a\nOut: b\nP", "\nIn: X\nOut:")
    assert split_template("{input}\n{input} {prompt} {input}", "P", "X") == ("X\nX", " P X")


def test_unknown_label_word_is_a_clear_error(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer)
    with pytest.raises(UserError, match="label word '' is not in the target's vocabulary"):
        engine.score(["p"], ["x"], "{input} {prompt}", [" good", ""])


def test_prefix_store_encodes_each_input_once_across_calls(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer)
    engine.score(PROMPTS[:2], INPUTS, "{input} {prompt}", [" good", " bad"])
    stored = {p: kv[1] for p, kv in engine.prefix_store.items()}
    assert len(stored) == len(INPUTS)
    widths = []
    hook = model.model.register_forward_hook(
        lambda m, a, kw, out: widths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        engine.score(PROMPTS[2:], INPUTS, "{input} {prompt}", [" good", " bad"])
    finally:
        hook.remove()
    # only suffix passes ran (none as wide as the longest input), and stored states were reused
    longest_input = max(len(tokenizer(x).input_ids) for x in INPUTS)
    assert widths and max(widths) < longest_input
    assert all(engine.prefix_store[p][1] is h for p, h in stored.items())


def test_a_prompt_shown_before_each_solved_pair_is_encoded_once_for_all_inputs(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer)
    shots = "{prompt}\nInput: fun\nOutput: good\n{prompt}\nInput: {input}\nOutput:"
    engine.score(PROMPTS[:2], INPUTS, shots, [" good", " bad"])
    # one stored prefix per prompt, holding the pair and the prompt's second copy
    assert len(engine.prefix_store) == 2
    for prompt in PROMPTS[:2]:
        head = f"{prompt}\nInput: fun\nOutput: good\n{prompt}"
        assert tuple(tokenizer(head).input_ids) in engine.prefix_store


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_score_does_not_depend_on_the_inputs_encoded_with_it(tiny_lm, dtype):
    """An input's encoding is the same whether it was missing alone or with others (batched,
    a padded row differs in bf16), so a resumed run, whose store starts empty, scores as the
    uninterrupted one did."""
    model, tokenizer = tiny_lm
    model = copy.deepcopy(model).to(dtype)
    warm = LocalScorer(model, tokenizer)
    warm.score(["x"], INPUTS, "{input} {prompt}", [" good", " bad"])  # every input at once
    for text in INPUTS:
        fresh = LocalScorer(model, tokenizer)  # this input alone
        args = (["it is"], [text], "{input} {prompt}", [" good", " bad"])
        assert torch.equal(warm.score(*args), fresh.score(*args))


def test_prefix_store_is_bounded(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer, prefix_store_tokens=12)
    engine.score(PROMPTS[:1], INPUTS, "{input} {prompt}", [" good", " bad"])
    assert sum(len(p) for p in engine.prefix_store) <= 12 or len(engine.prefix_store) == 1


def test_prefix_chunks_keep_equal_prefixes_together_within_the_budget():
    prefixes = [(1, 2), (3,), (1, 2), (4, 5, 6), (3,), (7, 8, 9, 10)]
    chunks = prefix_chunks(prefixes, budget=3)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(prefixes)))
    for chunk in chunks:
        distinct = {prefixes[i] for i in chunk}
        assert sum(map(len, distinct)) <= 3 or len(distinct) == 1
    assert any({0, 2} <= set(c) for c in chunks) and any({1, 4} <= set(c) for c in chunks)
    assert prefix_chunks(prefixes, budget=100) == [[0, 2, 1, 4, 3, 5]]


@pytest.mark.parametrize("progress", [False, True])
def test_a_call_over_more_inputs_than_the_store_encodes_each_once(tiny_lm, monkeypatch, progress):
    """A test set outgrows the prefix store: the store stays near its bound during the call
    (one call, or a progress bar's chunks), every input is encoded once for all prompts (the
    chunks would otherwise cut the pairs prompt by prompt), and the scores are those of an
    unbounded store."""
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK", 3)
    model, tokenizer = tiny_lm
    inputs = [f"{a} {b}" for a in INPUTS for b in INPUTS]  # 16 inputs, ~200 tokens in all
    args = (PROMPTS, inputs, "{input} {prompt}", [" good", " bad"])
    roomy = LocalScorer(model, tokenizer).score(*args)
    engine = LocalScorer(model, tokenizer, prefix_store_tokens=8)
    engine.progress = progress
    encoded, held = [], []
    encode = engine._encode_prefixes

    def counting(prefixes):
        encoded.extend(p for p in prefixes if p not in engine.prefix_store)
        encode(prefixes)
        held.append(sum(map(len, engine.prefix_store)))

    monkeypatch.setattr(engine, "_encode_prefixes", counting)
    torch.testing.assert_close(engine.score(*args), roomy, atol=1e-5, rtol=1e-5)
    assert sorted(encoded) == sorted({tuple(tokenizer(x).input_ids) for x in inputs})
    longest = max(len(tokenizer(x).input_ids) for x in inputs)
    assert max(held) <= max(8, longest) + longest


def test_masked_lm_scorer_reads_the_mask_position(tiny_tokenizer, tmp_path):
    from transformers import RobertaConfig, RobertaForMaskedLM

    from stableprompt.models import build_scorer
    from stableprompt.models.scoring import MaskedLMScorer

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=0,
        max_position_embeddings=128,
    )
    RobertaForMaskedLM(config).eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scorer = build_scorer(str(tmp_path), dtype="float32")  # detects the masked-LM architecture
    assert isinstance(scorer, MaskedLMScorer)
    labels = [" terrible", " good"]  # single tokens in the tiny vocabulary
    got = scorer.score(PROMPTS[:2], INPUTS[:3], "{input} {prompt}", labels)
    for i, prompt in enumerate(PROMPTS[:2]):
        for j, text in enumerate(INPUTS[:3]):
            ids = tokenizer(f"{text} {prompt} <mask>", return_tensors="pt").input_ids
            pos = (ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]
            logits = scorer.model(input_ids=ids).logits[0, pos].log_softmax(-1)
            want = logits[[tokenizer(w, add_special_tokens=False).input_ids[0] for w in labels]]
            torch.testing.assert_close(got[i, j], want, atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="split into several tokens"):
        scorer.score(PROMPTS[:1], INPUTS[:1], "{input} {prompt}", [" superb", " good"])
    long_input = " ".join(["film"] * 200)  # past the 128 positions
    with pytest.raises(UserError, match="more than the 128-token context of target"):
        scorer.score(PROMPTS[:1], [long_input], "{input} {prompt}", labels)


def test_braces_inside_prompt_or_input_stay_literal():
    from stableprompt.tasks.registry import fill_template as fill

    assert fill("{input} {prompt}", "Label {input} now", "a {prompt} b") == (
        "a {prompt} b Label {input} now"
    )
    assert split_template("{prompt} {input}", "Say {input}", "X") == ("Say {input}", " X")


@pytest.mark.parametrize("bias", [False, True])
def test_head_logits_equals_the_linear_layer(bias):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=bias)
    hidden = torch.randn(2, 3, 16)
    torch.testing.assert_close(head_logits(head, hidden), head(hidden), atol=1e-5, rtol=1e-5)
    # float32 hidden states on a bf16 head (the token policy's Q-values) come out float32
    assert head_logits(head.to(torch.bfloat16), hidden).dtype == torch.float32


def test_few_row_linears_give_the_models_outputs_and_restore_its_layers(tiny_lm):
    """Decoding under few_row_linears (weight @ x^T for up to 16 rows) gives the model's own
    hidden states for a few rows and for many; afterwards no layer keeps the patched forward."""
    model, _ = tiny_lm
    torch.manual_seed(0)
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with torch.no_grad():
        for rows, length in ((4, 1), (3, 5), (8, 4)):  # 4 and 15 rows patched, 32 not
            ids = torch.randint(0, 100, (rows, length))
            plain = model.model(input_ids=ids).last_hidden_state
            with few_row_linears(model), few_row_linears(model):  # nesting is harmless
                assert all("forward" in vars(m) for m in linears)
                fast = model.model(input_ids=ids).last_hidden_state
            torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert not any("forward" in vars(m) for m in linears)


def test_decoding_under_few_row_linears_keeps_the_fused_attention_kernel(tiny_lm):
    """`weight @ x^T` is transposed back to row-major: a query whose head dimension is strided
    sends attention from torch's flash kernel to its unfused math kernel, which cost APPO's
    agent a fifth of its decoding time."""
    from torch.profiler import profile

    model, _ = tiny_lm
    ids = torch.randint(0, 100, (4, 6))
    with torch.no_grad():
        cache = output_cache(model.model(input_ids=ids[:, :5], use_cache=True))
        with few_row_linears(model), profile() as prof:
            step = {"input_ids": ids[:, 5:], "use_cache": True, **cache_kwarg(model.model, cache)}
            model.model(**step)
    kernels = {e.key for e in prof.key_averages() if "attention" in e.key}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels, kernels


def test_an_input_longer_than_the_context_is_refused(tiny_lm):
    model, tokenizer = tiny_lm
    engine = LocalScorer(model, tokenizer)
    limit = model.config.max_position_embeddings
    long_input = " ".join(["film"] * (limit + 10))
    with pytest.raises(UserError, match=rf"more than the {limit}-token context of target"):
        engine.score(["It was"], ["fine", long_input], "{input} {prompt}", [" good", " bad"])
    assert engine.calls == 2 and engine.computed == 0  # refused before any model call


def test_a_long_scoring_shows_progress_and_scores_the_same(tiny_lm, monkeypatch, capsys):
    """`eval` and the final test scoring run thousands of pairs: with progress on, the scorer
    works in chunks behind a bar on stderr, with the same scores as in one piece."""
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK", 4)
    model, tokenizer = tiny_lm
    quiet = LocalScorer(model, tokenizer).score(PROMPTS, INPUTS, "{input} {prompt}", [" a", " b"])
    assert "scoring" not in capsys.readouterr().err
    shown = LocalScorer(model, tokenizer)
    shown.progress = True
    chunked = shown.score(PROMPTS, INPUTS, "{input} {prompt}", [" a", " b"])
    err = capsys.readouterr().err
    assert "scoring" in err and f"{len(PROMPTS) * len(INPUTS)}/{len(PROMPTS) * len(INPUTS)}" in err
    torch.testing.assert_close(chunked, quiet, atol=1e-5, rtol=1e-5)
    assert shown.computed == shown.calls == len(PROMPTS) * len(INPUTS)


def test_a_long_generation_shows_progress_and_writes_the_same(tiny_lm, capsys):
    """Greedy answers (generation tasks' `eval`) cost a decoding loop each: the bar moves every
    GENERATION_CHUNK texts, which are the decoder's own batches, so the answers are the same."""
    model, tokenizer = tiny_lm
    texts = [f"{p} {x}" for p in PROMPTS for x in INPUTS]
    texts += [f"{x} {p}" for p in PROMPTS for x in INPUTS]  # 40 texts: two chunks
    quiet = LocalScorer(model, tokenizer).generate(texts, max_new_tokens=3, stop=None)
    shown = LocalScorer(model, tokenizer)
    shown.progress = True
    assert shown.generate(texts, max_new_tokens=3, stop=None) == quiet
    assert f"{len(texts)}/{len(texts)}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sharp_lm(tiny_lm):
    """The tiny LM with queries and keys scaled up: its attention is peaked enough that a wrong
    position or mask changes greedy answers (the random model writes much the same otherwise)."""
    model = copy.deepcopy(tiny_lm[0])
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight *= 6
            layer.self_attn.k_proj.weight *= 6
    return model, tiny_lm[1]


def solved_pairs_texts(prompts: list[str]) -> list[str]:
    """Generation-task texts as `--target-shots` renders them: a prompt over three solved pairs,
    then the input (prompt-major, so most batches share a long prefix)."""
    pairs = "".join(f"{{p}}\nInput: {x}\nOutput: {x[::-1]}\n" for x in INPUTS[:3])
    return [pairs.format(p=p) + f"{p}\nInput: {x}\nOutput:" for p in prompts for x in INPUTS]


@pytest.mark.parametrize("stop", [None, "\n", " t"])
def test_greedy_answers_over_a_shared_prefix_are_transformers_generate_answers(sharp_lm, stop):
    """The scorer decodes a batch's common tokens once (the prefix store) and then each row's
    input and answer; the answers are exactly `generate`'s on the whole texts, with stop strings,
    rows padded to different lengths, a batch of two prompts and a one-token text."""
    model, tokenizer = sharp_lm
    mixed = ["fun", "it is the film"]  # sharing no pairs; "fun" is one token (no BOS here)
    texts = solved_pairs_texts(PROMPTS[:2]) + mixed + solved_pairs_texts(PROMPTS)
    scorer = LocalScorer(model, tokenizer)
    answers = scorer.generate(texts, max_new_tokens=6, stop=stop)
    assert answers == greedy_generate(model, tokenizer, texts, 6, stop)
    apart = [*mixed, "boring"]  # a batch whose texts share no first token (a fresh cache)
    alone = LocalScorer(model, tokenizer).generate(apart, 6, stop)
    assert alone == greedy_generate(model, tokenizer, apart, 6, stop)
    shared = tokenizer(solved_pairs_texts(PROMPTS[:1])[0]).input_ids
    longest = max(len(p) for p in scorer.prefix_store)
    assert longest > len(shared) // 2  # the pairs were encoded once, as a prefix


def test_gemma3_decodes_over_the_shared_prefix_inside_its_sliding_window(
    tiny_tokenizer, monkeypatch
):
    """A model with sliding-window layers decodes over the stored prefix the batches whose
    layout stays inside the window (there sliding attention is full attention), and with
    `generate` the texts the window cannot hold with their answers; the answers are
    `generate`'s either way."""
    texts = solved_pairs_texts(PROMPTS[:2])
    lengths = [len(tiny_tokenizer(t).input_ids) for t in texts]
    generated = []  # the texts the scorer hands to `generate`

    def recorded(model, tokenizer, texts, *args, **kwargs):
        generated.extend(texts)
        return greedy_generate(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(scoring, "greedy_generate", recorded)
    # the first window holds every text with its 6 answer tokens; the second cuts the longest
    # texts' first tokens (decoded over the prefix they would answer otherwise), the third
    # only their answers' last tokens
    for window in (4 * max(lengths), max(lengths), max(lengths) + 3):
        model = tiny_gemma3(tiny_tokenizer, sliding_window=window, sharp=True)
        generated.clear()
        answers = LocalScorer(model, tiny_tokenizer).generate(texts, max_new_tokens=6, stop=None)
        # the texts the window cannot hold with their answers, and only those, take `generate`
        assert generated == [t for t, n in zip(texts, lengths, strict=True) if n + 6 >= window]
        assert answers == greedy_generate(model, tiny_tokenizer, texts, 6, None)
        assert len(set(answers)) > 1


def test_greedy_answers_end_at_eos_like_generate(sharp_lm):
    """A row ends at the generation config's EOS token as in `generate` (what follows is not
    part of the answer), while the batch's other rows run on."""
    model, tokenizer = copy.deepcopy(sharp_lm[0]), sharp_lm[1]
    texts = solved_pairs_texts(PROMPTS[:2])
    free = greedy_generate(model, tokenizer, texts, 6, None)
    first = tokenizer(texts[0], return_tensors="pt")
    written = model.generate(**first, max_new_tokens=3, do_sample=False, pad_token_id=0)
    third = int(written[0, -1])  # the first row's third answer token
    model.generation_config.eos_token_id = third
    answers = LocalScorer(model, tokenizer).generate(texts, max_new_tokens=6, stop=None)
    assert answers == greedy_generate(model, tokenizer, texts, 6, None)
    assert answers != free and len(answers[0]) < len(free[0])


def test_a_generation_config_that_changes_greedy_decoding_is_honoured(sharp_lm):
    """Tokens the model's generation config suppresses (or a repetition penalty) change greedy
    answers: such a model decodes with `generate`, so its answers keep the setting."""
    model, tokenizer = copy.deepcopy(sharp_lm[0]), sharp_lm[1]
    texts = solved_pairs_texts(PROMPTS[:2])
    plain = LocalScorer(model, tokenizer).generate(texts, max_new_tokens=8, stop=None)
    first = tokenizer(texts[0], return_tensors="pt")
    written = model.generate(**first, max_new_tokens=1, do_sample=False, pad_token_id=0)
    model.generation_config.suppress_tokens = [int(written[0, -1])]
    assert not plain_greedy(model.generation_config)
    suppressed = LocalScorer(model, tokenizer).generate(texts, max_new_tokens=8, stop=None)
    assert suppressed == greedy_generate(model, tokenizer, texts, 8, None) != plain


def test_grouped_sdpa_gives_sdpas_values_and_gradients_without_copying_heads(tiny_tokenizer):
    """Under a mask, transformers' sdpa copies each key/value head once per query head before
    calling torch; `grouped_sdpa` passes the grouped heads as they are. A padded batch (so a
    mask is built) through a GQA model: the same logits and gradients, and no head copies."""
    from torch.profiler import profile

    plain, grouped = tiny_llama(len(tiny_tokenizer)), tiny_llama(len(tiny_tokenizer))
    assert plain.config.num_key_value_heads < plain.config.num_attention_heads
    use_grouped_sdpa(grouped)
    assert grouped.config._attn_implementation == GROUPED_SDPA
    ids = torch.randint(2, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding: the model gets an attention mask
    outs = []
    for model in (plain, grouped):
        model.zero_grad()
        with profile() as prof:
            logits = model(input_ids=ids, attention_mask=mask).logits
        (logits[mask.bool()].logsumexp(-1).sum()).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        expands = sum(e.count for e in prof.key_averages() if e.key == "aten::expand")
        outs.append((logits.detach(), grads, expands))
    (plain_logits, plain_grads, plain_expands), (logits, grads, expands) = outs
    torch.testing.assert_close(logits, plain_logits, atol=1e-5, rtol=1e-5)
    for g, pg in zip(grads, plain_grads):
        torch.testing.assert_close(g, pg, atol=1e-5, rtol=1e-4)
    layers = plain.config.num_hidden_layers
    assert plain_expands - expands == 2 * layers  # repeat_kv's key and value copies, per layer


def test_load_lm_attends_with_grouped_sdpa(tiny_model_dir):
    model, _ = load_lm(tiny_model_dir, dtype="float32")
    assert model.config._attn_implementation == GROUPED_SDPA
