"""Integration tests on the real packaged LM (smollm2-135m) and the shared SST-2 data. Slow."""

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


def test_manual_prompt_beats_chance_on_dev(smollm2, sst2, capsys):
    from stableprompt.cli import main

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
            "All in all, the movie was",
            "--dtype",
            "float32",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "accuracy" in out
    accuracy = float(out.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.6, out  # measured 0.72 at the time of writing; chance is 0.5
