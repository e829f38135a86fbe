"""--dtype int8: dynamic int8 linear layers for frozen models, checked against fp32."""

import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.models import LocalScorer, load_lm
from stableprompt.models.loading import resolve_dtype, trainable_dtype

TEXTS = ["the film was great", "boring plot", "I love it", "bad acting", "very fun", "not good"]
PROMPTS = ["It was", "Sentiment:", "the movie is"]
WORDS = [" bad", " good"]


def scores(model_dir: str, dtype: str) -> torch.Tensor:
    model, tokenizer = load_lm(model_dir, dtype=dtype)
    return LocalScorer(model, tokenizer).score(PROMPTS, TEXTS, "{input} {prompt}", WORDS)


def test_int8_layers_replace_the_blocks_linears_but_not_the_head(tiny_model_dir):
    model, _ = load_lm(tiny_model_dir, dtype="int8")
    linears = [m for m in model.model.modules() if type(m).__name__ == "Linear"]
    assert linears and all(type(m).__module__.startswith("torch.ao.nn.quantized") for m in linears)
    assert isinstance(model.lm_head, torch.nn.Linear)
    assert model.lm_head.weight.dtype == torch.float32


def test_int8_label_logprobs_agree_with_fp32(tiny_model_dir):
    fp32, int8 = scores(tiny_model_dir, "float32"), scores(tiny_model_dir, "int8")
    # stated tolerance: 0.05 nats on any label log-prob of the tiny model
    assert (fp32 - int8).abs().max().item() < 0.05
    assert not torch.equal(fp32, int8)  # the int8 path really ran


def test_int8_is_fp32_compute_and_lora_models_stay_fp32():
    assert resolve_dtype("int8") == torch.float32
    assert trainable_dtype("int8") == "float32" and trainable_dtype("bfloat16") == "bfloat16"
    with pytest.raises(UserError, match="int8"):
        resolve_dtype("int4")


def test_token_policy_trains_on_an_int8_agent(tiny_model_dir, tmp_path):
    from stableprompt.trainer import Trainer

    from .test_trainer import make_config, make_ctx

    config = make_config(tiny_model_dir, tmp_path, algo="sparse-sql", dtype="int8", steps=2)
    config.pin_top_k = 50
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    summary = trainer.train()
    assert summary["steps"] == 2 and summary["prompts"]
    frozen = trainer.algorithm.policy.lm.model.layers[0].mlp.up_proj
    assert type(frozen).__module__.startswith("torch.ao.nn.quantized")
    assert all(p.dtype == torch.float32 for p in trainer.algorithm.policy.mlp.parameters())


def test_int8_is_refused_for_a_model_it_would_change(tiny_model_dir, monkeypatch):
    import stableprompt.models.loading as loading

    monkeypatch.setattr(loading, "INT8_MAX_DRIFT", 0.0)  # any change is too much
    with pytest.raises(UserError, match="would change rewards materially"):
        load_lm(tiny_model_dir, dtype="int8")
    model, _ = load_lm(tiny_model_dir, dtype="int8", check_int8=False)  # benchmarks measure it
    assert type(model.model.layers[0].mlp.up_proj).__module__.startswith("torch.ao")
