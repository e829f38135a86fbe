"""--dtype int8 (dynamic int8 linear layers for frozen models, checked against fp32) and
--dtype auto (bf16 where this machine measured it faster, cached per machine)."""

import json

import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.models import LocalScorer, load_lm
from stableprompt.models.loading import dtype_name, resolve_dtype, trainable_dtype

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


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto measures the CPU")
def test_auto_measures_bf16_once_per_machine_and_reads_the_cache_after(tmp_path, monkeypatch):
    import stableprompt.models.loading as loading

    monkeypatch.setenv("STABLEPROMPT_CACHE", str(tmp_path))
    monkeypatch.setattr(loading, "_measure_bf16_speedup", lambda: 3.0)  # native bf16
    assert resolve_dtype("auto") == torch.bfloat16 and dtype_name("auto") == "bfloat16"
    cache = tmp_path / "dtype-speed.json"
    (key,) = json.loads(cache.read_text())
    assert "threads" in key and torch.__version__ in key

    def measure_again() -> float:
        raise AssertionError("measured a second time on the same machine")

    monkeypatch.setattr(loading, "_measure_bf16_speedup", measure_again)
    assert resolve_dtype("auto") == torch.bfloat16  # from the cache
    cache.write_text(json.dumps({key: 0.2}))  # emulated bf16: five times slower
    assert resolve_dtype("auto") == torch.float32 and dtype_name("auto") == "float32"
    assert dtype_name("int8") == "int8" and dtype_name("bfloat16") == "bfloat16"
    cache.write_text("{not json")  # a damaged cache is measured afresh, not trusted
    monkeypatch.setattr(loading, "_measure_bf16_speedup", lambda: 1.1)  # too small a gain
    assert resolve_dtype("auto") == torch.float32
    assert json.loads(cache.read_text()) == {key: 1.1}


def test_the_bf16_measurement_times_fp32_over_bf16(monkeypatch):
    import time

    import torch.nn.functional as F

    from stableprompt.models.loading import _measure_bf16_speedup

    linear, seen = F.linear, []

    def slow_fp32(x, w):  # fp32 0.2 s slower a call (emulated bf16 takes ~0.03 s): ratio > 1
        seen.append(x.dtype)
        if x.dtype == torch.float32:
            time.sleep(0.2)
        return linear(x, w)

    monkeypatch.setattr(F, "linear", slow_fp32)
    assert _measure_bf16_speedup(repeats=2) > 1
    assert seen == [torch.float32] * 3 + [torch.bfloat16] * 3  # warm-up and 2 timed calls each
