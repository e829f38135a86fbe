"""Prompt naturalness: perplexity under a reference LM and the share of English-word tokens."""

import json
import math

import pytest
import torch

from stableprompt.cli import main
from stableprompt.naturalness import english_word_share, naturalness, prompt_perplexity


def word_level_tokenizer():
    """Whitespace-and-punctuation words, one token each, so the split is known exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the movie was great xqz zzq films loved a x , ! 42".split()
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def plain_perplexity(model, tokenizer, prompt: str) -> float:
    """One unbatched forward: exp of the mean NLL of the prompt's tokens after the start token."""
    ids = [tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    nll = -logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return math.exp(nll.mean().item())


def test_perplexity_equals_plain_forward_in_a_padded_batch(tiny_lm):
    model, tokenizer = tiny_lm
    assert tokenizer.bos_token_id is None  # so the EOS token is the start symbol
    prompts = ["the movie was great", "It was", "a very long prompt about the plot and acting"]
    got = prompt_perplexity(prompts, model, tokenizer, batch_size=3)
    for prompt, value in zip(prompts, got):
        assert value == pytest.approx(plain_perplexity(model, tokenizer, prompt), rel=1e-5)


def test_perplexity_is_deterministic_and_independent_of_batching(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = ["great great great great", "the movie was great", "xqz zzq", "fun"]
    batched = prompt_perplexity(prompts, model, tokenizer, batch_size=4)
    assert prompt_perplexity(prompts, model, tokenizer, batch_size=4) == batched
    alone = [prompt_perplexity([p], model, tokenizer)[0] for p in prompts]
    assert alone == pytest.approx(batched, rel=1e-5)


def test_one_token_prompt_has_a_value_and_empty_prompt_is_nan(tiny_lm):
    model, tokenizer = tiny_lm
    one, empty = prompt_perplexity(["great", ""], model, tokenizer)
    assert len(tokenizer("great", add_special_tokens=False)["input_ids"]) == 1
    assert one == pytest.approx(plain_perplexity(model, tokenizer, "great"), rel=1e-5)
    assert math.isnan(empty)


def test_perplexity_uses_bos_when_the_tokenizer_has_one(tiny_lm):
    model, tokenizer = tiny_lm
    with_bos = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<pad>")
    with_bos.pad_token, with_bos.eos_token = "<pad>", "<eos>"
    ids = [with_bos.bos_token_id, *with_bos("It was", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], dim=-1)
    nll = -logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean().item()
    assert prompt_perplexity(["It was"], model, with_bos)[0] == pytest.approx(math.exp(nll))


@pytest.mark.parametrize(
    ("prompt", "share"),
    [
        ("the movie was great", 1.0),
        ("xqz zzq", 0.0),
        ("the movie , xqz", 0.5),  # punctuation is not a word
        ("great !", 0.5),
        ("42 films", 0.5),  # digits are not; the plural of a listed word is
        ("loved a x", 2 / 3),  # one-letter words are "a" and "i" only
        ("the unknownword", 0.5),  # [UNK] is not a word
    ],
)
def test_english_word_share_on_hand_cases(prompt, share):
    assert english_word_share([prompt], word_level_tokenizer()) == [pytest.approx(share)]


def test_english_word_share_counts_whitespace_tokens_as_non_words(tiny_tokenizer):
    # The byte-level test tokenizer splits "the movie" into "the", " ", "movie".
    pieces = tiny_tokenizer.tokenize("the movie was great")
    assert len(pieces) == 7
    got = english_word_share(["the movie was great", "xqz zzq", ""], tiny_tokenizer)
    assert got[:2] == [pytest.approx(4 / 7), 0.0] and math.isnan(got[2])


def test_naturalness_combines_both(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = ["the movie was great", "xqz zzq"]
    result = naturalness(prompts, model, tokenizer)
    assert [r["perplexity"] for r in result] == prompt_perplexity(prompts, model, tokenizer)
    assert [r["english_word_share"] for r in result] == english_word_share(prompts, tokenizer)


def test_eval_cli_reports_naturalness(capsys, tiny_model_dir, tiny_lm, tmp_path):
    out = tmp_path / "result.json"
    argv = ["eval", "--target", tiny_model_dir, "--dtype", "float32", "--split", "dev"]
    argv += ["--prompt", "It was", "--reference-lm", tiny_model_dir, "--out", str(out)]
    assert main(argv) == 0
    assert "perplexity" in capsys.readouterr().out
    result = json.loads(out.read_text())
    expected = naturalness(["It was"], *tiny_lm)[0]  # same weights as the saved tiny model
    assert result["reference_lm"] == tiny_model_dir
    assert result["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert result["english_word_share"] == pytest.approx(expected["english_word_share"])


def test_eval_cli_reference_lm_none_skips_naturalness(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "result.json"
    argv = ["eval", "--target", tiny_model_dir, "--dtype", "float32", "--split", "dev"]
    assert main([*argv, "--reference-lm", "none", "--out", str(out)]) == 0
    assert "perplexity" not in capsys.readouterr().out
    assert "perplexity" not in json.loads(out.read_text())


@pytest.mark.slow
def test_real_lm_finds_a_sentence_more_natural_than_token_soup():
    from stableprompt.models.loading import load_lm

    lm, tokenizer = load_lm("smollm2-135m", dtype="float32", shared=True)
    sentence, shuffled, soup = naturalness(
        ["All in all, the movie was", "was movie the all, in All", "ImageSlide Absolutely VERY"],
        lm,
        tokenizer,
    )
    assert sentence["perplexity"] < shuffled["perplexity"] < soup["perplexity"]
    assert sentence["english_word_share"] > soup["english_word_share"]
