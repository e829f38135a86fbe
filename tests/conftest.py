"""Shared fixtures: tiny random models built from configs, and paths to the shared data."""

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build_tiny_tokenizer():
    """A real byte-level BPE tokenizer over a small vocabulary (no download).

    Listed words become single tokens (with and without a leading space); anything else is spelt
    out in characters, so both single- and multi-token label words can be tested.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = (
        "the a movie film was great terrible good bad it is not very fun boring plot acting Review "
        "Sentiment okay love hate World Sports Business Tech Input Output prompt answer yes no"
    ).split()
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for ch in alphabet:  # every byte, so any text can be encoded
        vocab.setdefault(ch, len(vocab))
    merges = []
    for word in words:
        for piece in (word, "Ġ" + word):
            current = piece[0]
            for ch in piece[1:]:
                merged = current + ch
                if merged not in vocab:
                    vocab[merged] = len(vocab)
                    merges.append((current, ch))
                current = merged
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    model = LlamaForCausalLM(config).eval()
    model.name_or_path = f"tiny-llama-{seed}"
    return model


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer):
    return tiny_llama(len(tiny_tokenizer)), tiny_tokenizer


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random llama + tokenizer (with a chat template) saved like a hub model directory,
    so tests go through the same `load_lm` path as real models."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_tokenizer.chat_template = CHAT_TEMPLATE
    tiny_llama(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)
