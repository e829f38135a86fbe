"""Baselines in the trainer harness: fixed prompts, in-context demos, best-of-N and its budget."""

import json

import pytest
import torch

from stableprompt.algorithms.baselines import BestOfN, random_token_prompts
from stableprompt.config import TrainConfig
from stableprompt.errors import UserError
from stableprompt.models import load_lm
from stableprompt.tasks import get_task
from stableprompt.tasks.demonstrations import show_solved_pairs
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


def test_solved_pairs_go_before_the_input_under_the_prompt_and_leave_train(tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    plain, train = ctx.template, ctx.splits["train"]
    show_solved_pairs(ctx, k=3, seed=0)
    lines = fill_template(ctx.template, "PROMPT", "INPUT").split("\n")
    assert len(lines) == 4 and lines[-1] == fill_template(plain, "PROMPT", "INPUT")
    by_line = {fill_template(plain, "PROMPT", ex.text): ex for ex in train}
    shown = []
    for line in lines[:3]:  # each pair: the template under the prompt, then the label word
        text = next(text for text in by_line if line.startswith(text))
        assert line == text + ctx.label_words[by_line[text].label]
        shown.append(by_line[text])
    assert len({id(ex) for ex in shown}) == 3
    # the pairs shown no longer reward; the one left is the train example not shown
    assert [id(ex) for ex in ctx.splits["train"]] == [
        id(ex) for ex in train if all(ex is not s for s in shown)
    ]
    again = make_ctx(tiny_model_dir)
    show_solved_pairs(again, k=3, seed=0)
    assert again.template == ctx.template  # the seed fixes the draw
    with pytest.raises(UserError, match="more than 4 train examples.*lower --target-shots"):
        show_solved_pairs(make_ctx(tiny_model_dir), k=4, seed=0)


def test_in_context_shows_the_pairs_target_shots_shows(tiny_model_dir, tmp_path):
    runs, saved = {}, {}
    for algo, kw in (("in-context", {"num_shots": 2}), ("manual", {"target_shots": 2})):
        ctx = make_ctx(tiny_model_dir)
        ctx.label_search = {"setting": "auto"}  # words a run would re-choose per prompt
        config = make_config(tiny_model_dir, tmp_path / algo, algo=algo, **kw)
        trainer = Trainer(config, ctx, progress=False)
        # the pairs carry the task's label words: a prompt's own words would not match them
        assert config.refit_label_words and trainer.algorithm.refit_calls() == 0
        runs[algo] = trainer.train()
        saved[algo] = json.loads((tmp_path / algo / "best_prompts.json").read_text())
    plain, ctx = (
        make_config(tiny_model_dir, tmp_path / "plain", algo="manual"),
        make_ctx(tiny_model_dir),
    )
    ctx.label_search = {"setting": "auto"}
    assert Trainer(plain, ctx, progress=False).algorithm.refit_calls() > 0
    # in-context's prompt is the two pairs (under the manual prompt), which --target-shots puts
    # in the template: the target reads the same text and scores it the same
    assert saved["manual"]["template"].count("{prompt}") == 3
    assert runs["in-context"]["best_prompt"].count(get_task("sst-2").manual_prompt) == 2
    read = {a: fill_template(saved[a]["template"], runs[a]["best_prompt"], "x y") for a in runs}
    assert read["in-context"] == read["manual"]
    scores = {a: [(p["dev"], p["test"]) for p in runs[a]["prompts"]] for a in runs}
    assert scores["in-context"] == scores["manual"]


def test_in_context_counts_add_pairs_and_dev_chooses(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(tiny_model_dir, tmp_path, algo="in-context", num_shots="0,3,1")
    trainer = Trainer(config, ctx, progress=False)
    none, three, one = trainer.algorithm.prompts
    assert none == "" and one.count("\n") == 1 and three.count("\n") == 3
    for seed in range(6):  # one draw per seed: the larger count adds pairs to the smaller's
        config = make_config(
            tiny_model_dir, tmp_path, algo="in-context", num_shots="3,1", seed=seed
        )
        more, fewer = Trainer(config, make_ctx(tiny_model_dir), progress=False).algorithm.prompts
        assert more.startswith(fewer)
    summary = trainer.train()
    assert len(summary["prompts"]) == 3  # each count scored on dev and on test
    shown = {"": 0, three: 3, one: 1}
    assert all(entry["pairs"] == shown[entry["prompt"]] for entry in summary["prompts"])
    assert summary["best"]["dev"] == max(p["dev"] for p in summary["prompts"])
    assert summary["best_prompt"] in (none, three, one)
    # chosen on dev and train too, a prompt is not scored on the train pairs it shows
    config = make_config(
        tiny_model_dir, tmp_path / "pooled", algo="in-context", num_shots="2", select_on="dev+train"
    )
    algorithm = Trainer(config, make_ctx(tiny_model_dir), progress=False).algorithm
    scores = algorithm.selection_scores(algorithm.prompts)  # [1, 4 dev + 4 train]
    assert scores[0, :4].isnan().sum() == 0 and scores[0, 4:].isnan().sum() == 2
    big = make_config(tiny_model_dir, tmp_path / "big", algo="in-context", num_shots=4)
    with pytest.raises(UserError, match="--num-shots 4 needs more than 4 train examples"):
        Trainer(big, make_ctx(tiny_model_dir), progress=False)


def test_target_shots_is_refused_where_pairs_are_already_chosen(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="--demonstrations chooses them.*drop --target-shots"):
        make_config(tiny_model_dir, tmp_path, algo="sql", demonstrations=2, target_shots=2)
    with pytest.raises(UserError, match="in-context shows --num-shots.*drop --target-shots"):
        make_config(tiny_model_dir, tmp_path, algo="in-context", target_shots=2)


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
