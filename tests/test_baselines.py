"""Baselines in the trainer harness: fixed prompts, in-context demos, best-of-N and its budget."""

import json

import pytest
import torch

from stableprompt.algorithms.baselines import (
    BestOfN,
    in_context_template,
    random_token_prompts,
)
from stableprompt.config import TrainConfig
from stableprompt.models import load_lm
from stableprompt.tasks import get_task
from stableprompt.tasks.registry import fill_template
from stableprompt.trainer import Trainer
from tests.test_trainer import make_ctx  # 6 texts: train 4, dev 4, test 6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_config(model_dir: str, out, **kw) -> TrainConfig:
    base = dict(agent=model_dir, target=model_dir, dtype="float32", out=str(out), steps=50)
    return TrainConfig(**{**base, **kw})


def test_manual_baseline_scores_dev_then_test_once(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(tiny_model_dir, tmp_path, algo="manual")
    summary = Trainer(config, ctx, progress=False).train()
    manual = get_task("sst-2").manual_prompt
    assert summary["steps"] == 0 and summary["best_prompt"] == manual
    entry = summary["prompts"][0]
    assert entry["dev"] == ctx.evaluate([manual], "dev").values[0]
    assert entry["test"] == ctx.report(manual, "test")["accuracy"]
    # dev (4) at step 0, then test (6) for the one pooled prompt; nothing else (a baseline is
    # not scored again as "the manual prompt")
    assert summary["target_calls"] == 4 and summary["test_calls"] == 6
    assert summary["manual"] is None
    saved = json.loads((tmp_path / "best_prompts.json").read_text())
    assert saved["algo"] == "manual" and saved["template"] == ctx.template


def test_in_context_template_shows_solved_train_examples(tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    template = in_context_template(ctx, k=3, seed=0)
    lines = template.split("\n")
    assert len(lines) == 4 and lines[-1] == ctx.template
    manual = ctx.task.manual_prompt
    train = {fill_template(ctx.template, manual, ex.text): ex.label for ex in ctx.splits["train"]}
    for line in lines[:3]:
        shown = next(text for text in train if line.startswith(text))
        assert line == shown + ctx.label_words[train[shown]]
    assert in_context_template(ctx, k=3, seed=0) == template


def test_random_prompts_have_the_length_and_follow_the_seed(tiny_model_dir):
    _, tokenizer = load_lm(tiny_model_dir, dtype="float32", shared=True)
    prompts = random_token_prompts(tiny_model_dir, n=4, length=5, seed=0)
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert prompts == random_token_prompts(tiny_model_dir, n=4, length=5, seed=0)
    assert prompts != random_token_prompts(tiny_model_dir, n=4, length=5, seed=1)
    for prompt in prompts:  # about 5 tokens (re-tokenising may merge a few)
        assert 1 <= len(tokenizer(prompt, add_special_tokens=False).input_ids) <= 6
    # --continue-manual: the same random tokens, after the manual prompt
    continued = random_token_prompts(tiny_model_dir, n=4, length=5, seed=0, context="It was")
    for prompt, alone in zip(continued, prompts, strict=True):
        assert prompt.startswith("It was") and prompt.endswith(alone.strip())


def test_best_of_n_spends_the_budget_and_keeps_the_best_dev_prompt(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(
        tiny_model_dir,
        tmp_path,
        algo="best-of-n",
        prompts_per_step=3,
        num_shots=2,
        max_new_tokens=5,
        eval_every=100,
        pool_size=2,
        max_target_calls=40,
    )
    trainer = Trainer(config, ctx, progress=False)
    assert isinstance(trainer.algorithm, BestOfN)
    summary = trainer.train()
    # each step scores 3 prompts on 4 dev examples = 12 calls: 3 steps fit in 40, a 4th would not
    assert summary["steps"] == 3
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["calls"] for r in records] == [0, 12, 24, 36]
    assert all("dev_scores" not in r for r in records)
    best = max(r["reward_max"] for r in records[1:])
    assert summary["prompts"][0]["dev"] == best
    assert summary["target_calls"] == 36
    # the pool of 2 on test; manual on dev and test; the check: the pool's best on dev again
    assert summary["test_calls"] == 2 * 6 + 4 + 6 + 4


def test_log_to_tensorboard_mirrors_the_metrics(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    ctx = make_ctx(tiny_model_dir)
    config = make_config(tiny_model_dir, tmp_path, algo="manual", log_to="tensorboard")
    Trainer(config, ctx, progress=False).train()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
