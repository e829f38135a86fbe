"""The shared trainer with the token-policy algorithms, on a tiny random model."""

import json

import pytest
import torch
from safetensors.torch import load_file

from stableprompt.config import TrainConfig
from stableprompt.contexts import TextContext
from stableprompt.errors import UserError
from stableprompt.models import LocalScorer, load_lm
from stableprompt.selection import split_half_reliability
from stableprompt.tasks import Example, get_task
from stableprompt.trainer import Trainer

from .conftest import SHARED_DATA

TEXTS = ["the film was great", "boring plot", "I love it", "bad acting", "very fun", "not good"]


def make_ctx(model_dir: str, dtype: str = "float32") -> TextContext:
    model, tokenizer = load_lm(model_dir, dtype=dtype, shared=True)
    examples = [Example(t, i % 2) for i, t in enumerate(TEXTS)]
    splits = {"train": examples[:4], "dev": examples[2:], "test": examples}
    return TextContext(get_task("sst-2"), splits, LocalScorer(model, tokenizer))


def tiny_policy(model_dir: str) -> dict:
    """Config values for a token policy on the tiny model (agent and target)."""
    return dict(
        agent=model_dir,
        target=model_dir,
        dtype="float32",
        prompt_length=3,
        prompts_per_step=4,
        mlp_hidden=16,
    )


def make_config(model_dir: str, out, **kw) -> TrainConfig:
    base = dict(
        **tiny_policy(model_dir),
        steps=6,
        eval_every=2,
        save_every=2,
        pool_size=3,
        lr=1e-3,
        out=str(out),
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("algo", ["sql", "sparse-sql"])
def test_training_writes_a_complete_run_directory(tiny_model_dir, tmp_path, algo):
    config = make_config(tiny_model_dir, tmp_path / algo, algo=algo, pin_top_k=50, replay=True)
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    summary = trainer.train()
    run = tmp_path / algo
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(7))
    assert all("dev_accuracy" in m for m in metrics if m["step"] % 2 == 0)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics[1:])
    parts = ("seconds_rollout", "seconds_reward", "seconds_update")
    assert all(m[p] > 0 for m in metrics[1:] for p in parts)  # where each step's time went
    best = json.loads((run / "best_prompts.json").read_text())
    assert best == summary and 1 <= len(best["prompts"]) <= 3
    assert all("test" in p and 0 <= p["test"] <= 1 for p in best["prompts"])
    devs = [p["dev"] for p in best["prompts"]]
    assert devs == sorted(devs, reverse=True)
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "latest").exists()
    # 6 steps x 4 prompts x 4 train examples; dev evaluations of 4 examples: the greedy prompt at
    # step 0, then at steps 2, 4 and 6 also the 3 best samples, each distinct prompt once;
    # after training, <=3 pool prompts x 6 test, and the manual prompt on dev (4) and test (6)
    scored = len(trainer.algorithm.dev_seen)
    assert 1 <= scored <= 1 + 3 * 4
    assert summary["target_calls"] == 6 * 4 * 4 + 4 * scored
    assert summary["test_calls"] == len(best["prompts"]) * 6 + 4 + 6 + 4  # + the check
    assert summary["manual"]["prompt"] == "It was" and 0 <= summary["manual"]["test"] <= 1
    assert summary["dtype"] == "float32"  # what the models ran in, recorded with the run


def test_the_final_test_scoring_encodes_each_test_input_once(tiny_model_dir, tmp_path):
    """The pool and the manual prompt are scored on test together: with a test set larger than
    the prefix store, each test input is still encoded once, not once per prompt."""
    ctx = make_ctx(tiny_model_dir)
    ctx.splits["test"] = [Example(f"{t} indeed", i % 2) for i, t in enumerate(TEXTS)]
    scorer = ctx.scorer
    scorer.prefix_store_tokens = 8
    encoded = []
    encode = scorer._encode_prefixes

    def counting(prefixes):
        encoded.extend(p for p in prefixes if p not in scorer.prefix_store)
        encode(prefixes)

    scorer._encode_prefixes = counting
    config = make_config(tiny_model_dir, tmp_path, algo="sql", steps=2)
    summary = Trainer(config, ctx, progress=False).train()
    assert len(summary["prompts"]) >= 2
    for example in ctx.splits["test"]:
        assert encoded.count(scorer._encode(example.text, True)) == 1
    assert summary["test_calls"] == len(summary["prompts"]) * 6 + 4 + 6 + 4  # as before


def test_killed_run_resumes_to_the_same_result(tiny_model_dir, tmp_path):
    full = Trainer(
        make_config(tiny_model_dir, tmp_path / "full"), make_ctx(tiny_model_dir), progress=False
    ).train()
    # "Kill" after 4 steps: a run configured for 4 steps leaves the step-4 checkpoint behind...
    Trainer(
        make_config(tiny_model_dir, tmp_path / "cut", steps=4),
        make_ctx(tiny_model_dir),
        progress=False,
    ).train()
    # ...and a new process resumes it with the full step count.
    resumed = Trainer(
        make_config(tiny_model_dir, tmp_path / "cut"), make_ctx(tiny_model_dir), progress=False
    ).train(resume=True)
    assert resumed["best_prompt"] == full["best_prompt"]
    assert resumed["prompts"] == full["prompts"]
    a = load_file(tmp_path / "full" / "checkpoints" / "step-6" / "weights.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-6" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "cut" / "metrics.jsonl").open()]
    assert steps == list(range(7))  # no duplicated or missing steps after the resume


def test_budget_stops_training(tiny_model_dir, tmp_path):
    config = make_config(tiny_model_dir, tmp_path, steps=50, max_target_calls=100, eval_samples=0)
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    assert trainer.projected_calls() == 50 * 16 + 26 * 4 + 3 * 6 + 2 * 4 + 6  # + manual, check
    summary = trainer.train()
    # 4 (step-0 dev eval) + 5 steps x 16 + 2 dev evals x 4 = 92; a 6th step would make 108 > 100
    assert summary["steps"] == 5


def test_gradients_reach_only_the_mlp(tiny_model_dir, tmp_path):
    from stableprompt.algorithms.sql import SoftQLearning

    algo = SoftQLearning(make_config(tiny_model_dir, tmp_path), make_ctx(tiny_model_dir))
    rollout = algo.policy.rollout(4, algo.choose)
    q = algo.policy.q_values(rollout.hidden)
    q.gather(-1, rollout.actions[..., None]).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in algo.policy.mlp.parameters())
    assert all(p.grad is None for p in algo.policy.lm.parameters())
    assert all(p.grad is None for p in algo.target_mlp.parameters())


def test_near_zero_init_gives_nearly_uniform_policy(tiny_model_dir, tmp_path):
    from stableprompt.algorithms.sql import SoftQLearning

    algo = SoftQLearning(make_config(tiny_model_dir, tmp_path), make_ctx(tiny_model_dir))
    rollout = algo.policy.rollout(2, algo.choose)
    probs = torch.softmax(algo.policy.q_values(rollout.hidden), -1)
    assert probs.max() < 5.0 / probs.shape[-1]


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(UserError, match="unknown config key"):
        TrainConfig.from_dict({"stepz": 3})


def test_yaml_config_types_are_checked(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nsteps: '20'\nout: 2024\nmax_target_calls: null\n")
    config = TrainConfig.from_yaml(path)  # YAML 1.1 reads 1e-4 as a string
    assert (config.lr, config.steps, config.out) == (1e-4, 20, "2024")
    assert config.max_target_calls is None
    for text, message in [
        ("steps: many\n", "steps must be an int"),
        ("replay: maybe\n", "replay must be a bool"),
        ("steps: true\n", "steps must be an int"),
        ("- steps\n", "YAML mapping"),
        ("steps: [1\n", "invalid YAML"),
        ("loss: mse\n", "unknown loss 'mse'"),
        ("algo: dqn\n", "unknown algo 'dqn'"),
        ("eval_every: 0\n", "eval_every must be at least 1"),
    ]:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            TrainConfig.from_yaml(path)


def test_template_without_placeholders_is_a_clear_error(tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    with pytest.raises(UserError, match="must contain both"):
        TextContext(ctx.task, ctx.splits, ctx.scorer, template="{input} It was")


def test_projection_counts_the_final_evaluation(tiny_model_dir, tmp_path):
    config = make_config(
        tiny_model_dir, tmp_path, steps=5, eval_every=2, save_every=5, eval_samples=0
    )
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    projected = trainer.projected_calls()
    summary = trainer.train()
    # evaluations at steps 0, 2, 4 and 5; the pool holds at most 3 prompts scored on 6 tests,
    # and the manual prompt is scored on dev (4) and test (6)
    assert projected == 5 * 16 + 4 * 4 + 3 * 6 + 2 * 4 + 6
    spent = summary["target_calls"] + summary["test_calls"]
    # every prompt scored on dev says how well dev tells them apart (the manual one is not
    # among them: it is not a choice)
    halves = trainer.algorithm.dev_halves
    assert summary["dev_prompts_scored"] == len(halves) == len(trainer.algorithm.dev_seen)
    assert trainer.algorithm.manual_prompt() not in halves
    assert summary["dev_reliability"] == split_half_reliability(list(halves.values()))
    # the projection is a bound: a greedy prompt that did not change is not scored again
    repeats = 4 - len(trainer.algorithm.dev_seen)
    assert spent == projected - (3 - len(summary["prompts"])) * 6 - 4 * repeats


def test_a_prompt_is_scored_on_dev_once_per_run(tiny_model_dir, tmp_path):
    """A fixed prompt's dev score never changes, so asking again costs no target calls; a
    resumed run keeps the scores, so it spends what the unbroken run spends."""
    config = make_config(tiny_model_dir, tmp_path, steps=2)
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    algo, scorer = trainer.algorithm, trainer.ctx.scorer
    first = algo.dev_scores(["It was", "It is"])
    calls = scorer.calls
    again = algo.dev_scores(["It is", "It was", "It seems", "It seems"])
    assert scorer.calls - calls == 4  # only "It seems", on the 4 dev examples, once
    assert again[:2] == first[::-1] and again[2] == again[3]
    fresh = algo.selection_scores(["It seems"])[0].mean().item()
    assert again[2] == pytest.approx(fresh)
    scores = algo.selection_scores(["It seems"])[0]  # the 4 dev examples: 0 and 2, 1 and 3
    halves = [scores[0::2].mean().item(), scores[1::2].mean().item()]
    assert algo.dev_halves["It seems"] == pytest.approx(halves)
    trainer.save()
    resumed = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    resumed.load(tmp_path)
    assert resumed.algorithm.dev_seen == algo.dev_seen
    assert resumed.algorithm.dev_halves == algo.dev_halves
    calls = resumed.ctx.scorer.calls
    assert resumed.algorithm.dev_scores(["It seems"]) == [again[2]]
    assert resumed.ctx.scorer.calls == calls


def test_the_evaluation_the_budget_ends_on_scores_what_the_calls_left_pay_for(
    tiny_model_dir, tmp_path
):
    """After the last step only the greedy prompt's dev scoring is reserved; the evaluation
    keeps the algorithm's order (greedy first), takes prompts already scored for free, and
    leaves the final choice of label words its calls."""
    trainer = Trainer(make_config(tiny_model_dir, tmp_path), make_ctx(tiny_model_dir))
    refit = 5
    trainer.algorithm.refit_calls = lambda: refit  # as if each pool prompt's words were chosen
    trainer.config.max_target_calls = refit + 4 + 3  # one new prompt on the 4 dev examples
    trainer.algorithm.dev_seen["seen"] = 0.5
    kept = trainer.affordable_eval_prompts(["greedy", "sample", "seen", "later"])
    assert kept == ["greedy", "seen"]
    assert trainer.next_step_calls() == trainer.algorithm.step_calls(0) + 4 + refit
    trainer.config.max_target_calls = None
    assert trainer.affordable_eval_prompts(["a", "b"]) == ["a", "b"]


def test_a_step_scores_at_most_32_train_examples_unless_told():
    """Left open, a step draws 32 train examples (a large train split scored whole for every
    prompt made an instruction-induction step cost ~9k calls); a small split is used whole."""
    from types import SimpleNamespace

    from stableprompt.algorithms.baselines import FixedPrompts

    train = [Example(f"text {i}", i % 2) for i in range(100)]
    ctx = SimpleNamespace(splits={"train": train}, task=get_task("sst-2"))
    drawn = FixedPrompts(TrainConfig(algo="manual"), ctx).train_examples()
    assert len(drawn) == 32 and len({ex.text for ex in drawn}) == 32
    told = FixedPrompts(TrainConfig(algo="manual", train_examples=100), ctx)
    assert told.examples_per_step() == 100 and told.train_examples() == train
    ctx.splits["train"] = train[:20]
    assert FixedPrompts(TrainConfig(algo="manual"), ctx).train_examples() == train[:20]


def test_evaluations_score_the_best_recent_samples_too(tiny_model_dir, tmp_path):
    from stableprompt.algorithms.sql import SoftQLearning

    config = make_config(tiny_model_dir, tmp_path, eval_every=2, eval_samples=2)
    algo = SoftQLearning(config, make_ctx(tiny_model_dir))
    algo.recent = [(0, 5.0, "old best"), (1, 1.0, "low"), (1, 3.0, "second"), (1, 3.0, "dup")]
    algo.recent.append((1, 4.0, "old best"))
    prompts = algo.eval_prompts()
    assert prompts[1:] == ["old best", "second"] and algo.prompts_per_eval() == 3
    # a step forgets samples older than eval_every steps and remembers its own
    algo.train_step(2)
    assert {s for s, _, _ in algo.recent} == {1, 2} and len(algo.recent) == 4 + 4
    restored = SoftQLearning(config, make_ctx(tiny_model_dir))
    restored.load_state(algo.state())
    assert restored.eval_prompts()[1:] == algo.eval_prompts()[1:]


def test_optimize_trains_in_one_call_and_returns_the_result(tiny_model_dir, tmp_path):
    import stableprompt

    result = stableprompt.optimize(
        "sst-2",
        str(SHARED_DATA / "fsc" / "16-shot" / "sst-2" / "16-42"),
        algo="sparse-sql",
        **tiny_policy(tiny_model_dir),
        steps=1,
        pin_top_k=20,
        pool_size=1,
        train_examples=4,
        out=str(tmp_path / "run"),
    )
    saved = json.loads((tmp_path / "run" / "best_prompts.json").read_text())
    assert result.best_prompt == saved["best_prompt"] and result.run_dir == tmp_path / "run"
    assert result.manual["prompt"] == "It was" and len(result.label_words) == 2
    with pytest.raises(UserError, match="unknown config key"):
        stableprompt.optimize("sst-2", steps=1, not_a_flag=3)
    with pytest.raises(UserError, match="a metric function applies to generation tasks"):
        stableprompt.optimize("shakespeare", metric=lambda prediction, example: 1.0)


def test_build_context_keeps_a_given_scorer_and_chooses_label_words(tiny_model_dir, tmp_path):
    from stableprompt.contexts import build_context

    scorer = make_ctx(tiny_model_dir).scorer
    config = make_config(
        tiny_model_dir, tmp_path, data=str(SHARED_DATA / "fsc/16-shot/sst-2/16-42")
    )
    ctx = build_context(config, scorer)
    assert ctx.scorer is scorer
    assert ctx.label_search["setting"] == "auto" and scorer.calls == 64  # train + dev, once
    assert ctx.task.label_words == tuple(ctx.label_search["label_words"])


def test_continue_manual_prompts_extend_the_manual_prompt(tiny_model_dir, tmp_path):
    """--continue-manual: every prompt is the manual prompt plus the learned tokens, the policy's
    states are the LM's after reading it (so replay sees what the rollout saw), and the run is
    checked against the manual prompt alone."""
    from stableprompt.algorithms.sql import SoftQLearning

    ctx = make_ctx(tiny_model_dir)
    manual = ctx.task.manual_prompt
    config = make_config(tiny_model_dir, tmp_path, continue_manual=True)
    algo = SoftQLearning(config, ctx)
    rollout = algo.policy.rollout(4, algo.choose)
    prompts = algo.policy.decode(rollout.actions)
    assert all(p.startswith(manual) and len(p) > len(manual) for p in prompts)
    replayed = algo.policy.replay(rollout.actions)
    torch.testing.assert_close(replayed.hidden, rollout.hidden, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(replayed.base_logits, rollout.base_logits, atol=1e-4, rtol=1e-4)
    # the first state is the LM's after the start token and the manual prompt
    ids = algo.policy.start_ids[None]
    first = algo.policy.lm.model(input_ids=ids).last_hidden_state[0, -1].float()
    torch.testing.assert_close(rollout.hidden[0, 0], first, atol=1e-5, rtol=1e-4)

    summary = Trainer(config, ctx, progress=False).train()
    assert all(p["prompt"].startswith(manual) for p in summary["prompts"])
    assert summary["manual"]["prompt"] == manual  # the check compares with the prompt alone


def test_continue_manual_errors(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="--continue-manual applies to"):
        TrainConfig(algo="appo", continue_manual=True)
    from dataclasses import replace

    from stableprompt.algorithms.sql import SoftQLearning

    ctx = make_ctx(tiny_model_dir)
    ctx.task = replace(ctx.task, manual_prompt="")
    with pytest.raises(UserError, match="needs a manual prompt"):
        SoftQLearning(make_config(tiny_model_dir, tmp_path, continue_manual=True), ctx)
