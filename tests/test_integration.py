"""Integration tests on the real packaged LM (smollm2-135m) and the shared SST-2 data. Slow."""

import json

import pytest
import torch

from stableprompt.models import LocalScorer, NaiveScorer, load_lm
from stableprompt.tasks import get_task, load_kshot_dir

from .conftest import SHARED_DATA

pytestmark = pytest.mark.slow
SST2 = SHARED_DATA / "fsc" / "16-shot" / "sst-2" / "16-42"


@pytest.fixture(scope="module")
def smollm2():
    return load_lm("smollm2-135m", dtype="float32", shared=True)


@pytest.fixture(scope="module")
def sst2():
    if not SST2.exists():
        pytest.skip(f"shared data not found at {SST2}")
    return load_kshot_dir(SST2)


def test_engine_matches_naive_on_real_model(smollm2, sst2):
    model, tokenizer = smollm2
    task = get_task("sst-2")
    prompts = ["It was", "Overall the movie was", "Sentiment:"]
    inputs = [ex.text for ex in sst2["train"][:6]]
    for labels in (list(task.label_words), [" very bad", " really good"]):  # 1 and 2 tokens
        fast = LocalScorer(model, tokenizer).score(prompts, inputs, task.template, labels)
        slow = NaiveScorer(model, tokenizer).score(prompts, inputs, task.template, labels)
        torch.testing.assert_close(fast, slow, atol=2e-3, rtol=1e-4)


def test_eval_cli_agrees_with_naive_scoring_on_dev(smollm2, sst2, capsys, tmp_path):
    from stableprompt.cli import main

    prompt = "The movie was"
    out = tmp_path / "dev.json"
    code = main(
        [
            "eval",
            "--task",
            "sst-2",
            "--data",
            str(SST2),
            "--split",
            "dev",
            "--prompt",
            prompt,
            "--dtype",
            "float32",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "accuracy" in capsys.readouterr().out
    result = json.loads(out.read_text())
    model, tokenizer = smollm2
    task = get_task("sst-2")
    words = result["label_words"]  # chosen for this target by --label-words auto
    assert result["label_word_search"]["setting"] == "auto" and len(words) == 2
    logprobs = NaiveScorer(model, tokenizer).score(
        [prompt], [ex.text for ex in sst2["dev"]], task.template, words
    )
    labels = torch.tensor([ex.label for ex in sst2["dev"]])
    expected = (logprobs[0].argmax(-1) == labels).float().mean().item()
    assert result["n"] == 32 and result["accuracy"] == pytest.approx(expected)
