"""`--conditioning input` (StablePrompt's test-time editing) on a tiny random llama: the agent
writes a prompt for each input, rewarded on that input alone; reload from a run directory."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stableprompt.algorithms import build_algorithm
from stableprompt.algorithms.conditioned import PER_INPUT, ConditionedPPO
from stableprompt.cli import main
from stableprompt.config import TrainConfig
from stableprompt.contexts import TextContext
from stableprompt.errors import UserError
from stableprompt.tasks import Example, get_task
from stableprompt.trainer import PromptPool, Trainer

from .test_appo import make_config as appo_config
from .test_appo import make_ctx, one_thread  # noqa: F401 (autouse: tiny matmuls on one thread)


def make_config(model_dir: str, out="unused", **overrides) -> TrainConfig:
    return appo_config(model_dir, out, **{"conditioning": "input", **overrides})


def make_algo(model_dir: str, **overrides) -> ConditionedPPO:
    torch.manual_seed(0)
    algo = build_algorithm(make_config(model_dir, **overrides), make_ctx(model_dir))
    assert isinstance(algo, ConditionedPPO)
    return algo


def pairs_and_input(meta: str) -> tuple[str, str]:
    """The shown pairs and the input of a conditioned meta-prompt."""
    pairs, rest = meta.split("Now this input:")
    return pairs, rest.split("Input: ")[1].split("\n")[0]


def test_the_meta_prompt_shows_the_input_and_never_pairs_it(tiny_model_dir):
    algo = make_algo(tiny_model_dir, num_shots=5)  # a train input: all 5 others are shown
    train = algo.ctx.splits["train"]
    for ex in train + algo.ctx.splits["dev"]:
        for fixed in (True, False):  # evaluation's pairs, training's
            pairs, shown_input = pairs_and_input(algo.meta_prompt(ex.text, fixed))
            assert shown_input == ex.text and pairs.count("Input: ") == 5
            assert f"Input: {ex.text}\n" not in pairs
            if ex in train:
                assert all(f"Input: {o.text}\n" in pairs for o in train if o is not ex)
    # an evaluated input always gets the same pairs (its prompt is cached per weights)
    assert algo.meta_prompt(train[0].text) == algo.meta_prompt(train[0].text)


def test_a_step_rewards_each_prompt_on_its_own_input_alone(tiny_model_dir):
    algo = make_algo(tiny_model_dir, num_shots=2, anchor_every=100)
    seen = []
    meta_prompt = algo.agent.meta_prompt

    def recording(examples, k, input_text=None, start=""):
        seen.append((input_text, [ex.text for ex in examples[:k]]))
        return meta_prompt(examples, k, input_text, start)

    algo.agent.meta_prompt = recording
    before = algo.ctx.scorer.calls
    metrics = algo.train_step(0)
    inputs = metrics["inputs"]
    assert len(inputs) == len(metrics["prompts"]) == 3 == len(set(inputs))
    assert [text for text, _ in seen] == inputs
    assert all(text not in shown for text, shown in seen)
    assert algo.ctx.scorer.calls - before == 3 == algo.step_calls(0)  # one call per pair
    examples = {ex.text: ex for ex in algo.ctx.splits["train"]}
    # each reward is the task-level APPO reward of that prompt on that one input
    alone = [
        algo.ctx.rewards([prompt], [examples[text]], "appo")[0]
        for prompt, text in zip(metrics["prompts"], inputs)
    ]
    pairs = algo.ctx.pair_rewards(metrics["prompts"], [examples[t] for t in inputs])
    torch.testing.assert_close(pairs, torch.stack(alone))
    assert metrics["reward_mean"] == pytest.approx(pairs.mean().item(), abs=1e-5)
    # 10 x correct + 0.1 x margin of one input: [10, 10.1] if right, [-0.1, 0] if wrong
    assert all(-0.1 <= r <= 0 or 10 <= r <= 10.1 for r in pairs.tolist())


@pytest.mark.parametrize("reward", ["metric", "likelihood", "loglikelihood"])
def test_generation_rewards_are_per_input_too(tiny_model_dir, reward):
    ctx = make_ctx(tiny_model_dir)
    words = [Example("hot", target="cold"), Example("up", target=("down", "below"))]
    splits = {"train": words, "dev": words}
    ctx = TextContext(get_task("antonyms"), splits, ctx.scorer, generation_reward=reward)
    prompts = ["Give the opposite.", "Answer:"]
    alone = [ctx.rewards([prompt], [ex])[0] for prompt, ex in zip(prompts, words)]
    torch.testing.assert_close(ctx.pair_rewards(prompts, words), torch.stack(alone))


def test_budget_counts_each_pair_and_projects_the_run_exactly(tiny_model_dir, tmp_path):
    # uncapped: the projection is the run's calls; capped: it stops with an evaluated step
    config = make_config(tiny_model_dir, tmp_path / "a", steps=4, anchor_every=2)
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    dev = len(trainer.ctx.splits["dev"])
    assert trainer.eval_calls() == dev
    assert [trainer.algorithm.step_calls(s) for s in range(4)] == [3, 3 + 2 * dev] * 2
    projected = trainer.projected_calls()
    summary = trainer.train()
    assert summary["target_calls"] + summary["test_calls"] == projected
    # 4 (step 0's evaluation) + 3 + 11 (a step with its anchor check) + 4 (evaluation) + 3: 25;
    # step 3 and the evaluation after it would pass 30, so step 3 is evaluated instead (29)
    cap, capped = 30, {"steps": 20, "anchor_every": 2, "max_target_calls": 30}
    config = make_config(tiny_model_dir, tmp_path / "b", **capped)
    summary = Trainer(config, make_ctx(tiny_model_dir), progress=False).train()
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert max(r["calls"] for r in records) <= summary["target_calls"] <= cap
    assert summary["steps"] == 3 and "dev_accuracy" in records[-1]


def test_the_pool_keeps_the_agent_at_its_best_dev_score(tiny_model_dir):
    pool = PromptPool(3)
    for dev, step in ((0.5, 0), (0.75, 2), (0.75, 4), (0.25, 6)):
        pool.add(PER_INPUT, dev, step)
    pool.add("It was", 0.6, 1)
    pool.add("It was", 0.6, 3)
    assert [(e["prompt"], e["dev"], e["step"]) for e in pool.entries] == [
        (PER_INPUT, 0.75, 2),
        ("It was", 0.6, 1),
    ]
    algo = make_algo(tiny_model_dir, anchor_every=100)
    scores = iter([0.5, 0.75, 0.75, 0.25])
    algo.dev_score = lambda weights=None, version=0: next(scores)
    kept = []
    for _ in range(4):
        algo.dev_scores([PER_INPUT])
        kept.append(algo.best_version)
        algo.train_step(0)
    assert algo.best_dev == 0.75 and kept == [0, 2, 2, 2]  # 2 PPO epochs a step; ties keep


def test_a_reloaded_agent_writes_the_same_prompts(tiny_model_dir, tmp_path):
    algo = make_algo(tiny_model_dir, anchor_every=100, lr=5e-2)
    initial = {k: v.clone() for k, v in algo.tensors().items() if k.startswith("agent.")}
    untrained = [row["prompt"] for row in algo.report(PER_INPUT, "dev")["rows"]]
    for step in range(2):
        algo.train_step(step)
    algo.dev_score = lambda weights=None, version=0: 1.0  # the trained weights are the best
    algo.dev_scores([PER_INPUT])
    moved = [k for k in initial if not torch.equal(initial[k], algo.best_state[k[6:]])]
    assert moved  # the best weights are trained ones, not the initial agent
    report = algo.report(PER_INPUT, "dev")
    save_file(algo.tensors(), tmp_path / "weights.safetensors")

    reloaded = make_algo(tiny_model_dir, anchor_every=100)
    reloaded.load_tensors(load_file(tmp_path / "weights.safetensors"))
    again = reloaded.report(PER_INPUT, "dev")
    assert [r["prompt"] for r in again["rows"]] == [r["prompt"] for r in report["rows"]]
    assert [r["prompt"] for r in again["rows"]] != untrained
    assert again["accuracy"] == report["accuracy"] and again["n"] == 4
    assert {"input", "prompt", "prediction", "gold"} <= set(again["rows"][0])


def test_batched_meta_prompts_decode_as_each_alone(tiny_model_dir):
    algo = make_algo(tiny_model_dir, lr=5e-2, anchor_every=100)
    algo.train_step(0)  # LoRA off zero, so the adapter takes part
    agent, texts = algo.agent, ["I love it", "boring plot and very bad acting overall", "ok"]
    metas = [algo.meta_prompt(text) for text in texts]
    query = agent.encode_queries(metas)
    assert query.mask is not None  # different lengths: padded
    batch = agent.sample(query, 3, 6, temperature=0)
    with torch.no_grad():
        logprobs, values = agent.forward_logprobs_values(query, batch.response)
    for i, meta in enumerate(metas):
        alone = agent.encode_query(meta)
        single = agent.sample(alone, 1, 6, temperature=0)
        assert single.texts[0] == batch.texts[i]
        n = int(batch.mask[i].sum())
        with torch.no_grad():
            lp, v = agent.forward_logprobs_values(alone, batch.response[i : i + 1, :n])
        torch.testing.assert_close(logprobs[i, :n], lp[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(values[i, :n], v[0], atol=1e-5, rtol=0)


def test_add_manual_asks_to_rewrite_the_manual_prompt(tiny_model_dir):
    algo = make_algo(tiny_model_dir, add_manual="yes")
    assert "rewrite it for the input: It was\n" in algo.meta_prompt("I love it")
    assert "rewrite" not in make_algo(tiny_model_dir).meta_prompt("I love it")
    ctx = make_ctx(tiny_model_dir)
    ctx.task = dataclasses.replace(ctx.task, manual_prompt=None)
    with pytest.raises(UserError, match="no manual prompt to rewrite"):
        ConditionedPPO(make_config(tiny_model_dir, add_manual="yes"), ctx)


@pytest.mark.parametrize("algo", ["ppo", "best-of-n"])
def test_add_manual_asks_the_task_agent_to_improve_the_manual_prompt(tiny_model_dir, algo):
    def asked_in_a_step(**overrides) -> str:
        config = appo_config(tiny_model_dir, algo=algo, **overrides)
        algorithm = build_algorithm(config, make_ctx(tiny_model_dir))
        asked, encode = [], algorithm.agent.encode_query
        algorithm.agent.encode_query = lambda text: asked.append(text) or encode(text)
        algorithm.train_step(0)
        return asked[-1]  # the meta-prompt the step sampled its prompts from

    assert "Start from this instruction and improve it: It was\n" in asked_in_a_step(
        add_manual="yes"
    )
    assert "improve it" not in asked_in_a_step()


@pytest.mark.parametrize("algo", ["ppo", "best-of-n"])
def test_add_manual_both_alternates_the_two_meta_prompts(tiny_model_dir, algo):
    """Even steps ask for a fresh instruction, odd steps to improve the manual one (ppo: before
    its first evaluation after step 0)."""
    config = appo_config(tiny_model_dir, algo=algo, add_manual="both")
    algorithm = build_algorithm(config, make_ctx(tiny_model_dir))
    asked, encode = [], algorithm.agent.encode_query
    algorithm.agent.encode_query = lambda text: asked.append(text) or encode(text)
    improves = []
    for step in range(3):
        algorithm.train_step(step)
        improves.append("Start from this instruction and improve it: It was\n" in asked[-1])
    assert improves == [False, True, False]


def test_add_manual_both_gives_the_steps_to_the_meta_prompt_ahead_on_dev(tiny_model_dir):
    """The two meta-prompts take turns until the first evaluation after step 0; from then on
    the one whose prompts (greedy or sampled) scored best on dev takes each step, and they
    take turns again while level. A resumed run keeps the credit."""
    config = appo_config(tiny_model_dir, algo="ppo", add_manual="both", eval_every=2)
    algo = build_algorithm(config, make_ctx(tiny_model_dir))
    asked, encode = [], algo.agent.encode_query
    algo.agent.encode_query = lambda text: asked.append(text) or encode(text)
    algo.greedy_prompt = lambda weights, index=0: ["fresh", "improved"][index]
    scores = {"fresh": 0.2, "improved": 0.6}
    algo.selection_scores = lambda prompts, label_words=None: torch.tensor(
        [[scores.get(p, 0.0)] for p in prompts]
    )

    def improves(step: int) -> bool:
        metrics = algo.train_step(step)
        improving = "Start from this instruction and improve it: It was\n" in asked[-1]
        assert metrics["meta_prompt"] == int(improving)
        return improving

    assert [improves(0)] == [False]
    assert {algo.written_by[p] for _, p in algo.top_sampled} == {0}  # step 0's samples
    assert [improves(1)] == [True]
    algo.dev_scores(algo.eval_prompts())  # the evaluation after step 1: "improved" leads
    assert algo.best_dev_by_start == pytest.approx([0.2, 0.6])
    assert [improves(step) for step in (2, 3)] == [True, True]
    sampled = next(p for p, index in algo.written_by.items() if index == 0 and p != "fresh")
    scores[sampled] = 0.9  # a prompt the fresh meta-prompt sampled now leads
    algo.dev_seen.pop(sampled, None)  # (scored 0 at the evaluation before)
    algo.dev_scores([sampled])
    assert [improves(4)] == [False]
    algo.best_dev_by_start = [0.6, 0.6]  # level: turns again
    assert [improves(step) for step in (5, 6)] == [True, False]
    resumed = build_algorithm(config, make_ctx(tiny_model_dir))
    resumed.load_tensors(algo.tensors())
    resumed.load_state(algo.state())
    assert resumed.best_dev_by_start == [0.6, 0.6] and resumed.written_by == algo.written_by
    single = build_algorithm(appo_config(tiny_model_dir, algo="ppo"), make_ctx(tiny_model_dir))
    single.train_step(0)
    single.dev_scores(single.eval_prompts())
    assert single.written_by == {}  # one meta-prompt: nothing to credit, nothing kept


def test_add_manual_both_evaluates_and_anchors_on_the_greedy_prompt_of_each_meta_prompt(
    tiny_model_dir,
):
    """Both greedy prompts are scored at an evaluation; the anchor check takes the better of
    each policy's two (a text the anchor also wrote is not scored again)."""
    from stableprompt.algorithms.ppo import SAMPLED_PER_EVAL

    algo = build_algorithm(
        appo_config(tiny_model_dir, add_manual="both", anchor_every=1), make_ctx(tiny_model_dir)
    )
    assert len(algo.eval_queries) == 2
    assert algo.prompts_per_eval() == 2 + SAMPLED_PER_EVAL
    dev = len(algo.ctx.splits["dev"])
    assert algo.step_calls(0) == algo.calls_per_step() + 2 * 2 * dev
    written = {(None, 0): "fresh", (None, 1): "improved", ("anchor", 0): "a0", ("anchor", 1): "a1"}
    algo.greedy_prompt = lambda weights, index=0: written[
        (None if weights is None else "anchor", index)
    ]
    scores = {"a0": 0.2, "a1": 0.5, "fresh": 0.7, "improved": 0.1}
    scored = []
    algo.dev_scores = lambda prompts: scored.extend(prompts) or [scores[p] for p in prompts]
    metrics = algo.train_step(0)
    assert metrics["anchor_dev"] == 0.5 and metrics["anchor_prompt"] == "a1"
    assert metrics["agent_dev"] == 0.7 and metrics["anchor_event"] == "update"
    assert sorted(scored) == ["a0", "a1", "fresh", "improved"]
    assert algo.eval_prompts()[:2] == ["fresh", "improved"]
    written[(None, 1)] = "fresh"  # both meta-prompts now give the anchor's own prompt
    scored.clear()
    metrics = algo.train_step(1)
    assert scored == [] and metrics["anchor_event"] == "keep" and metrics["agent_dev"] == 0.7


@pytest.mark.parametrize("anchor_on", ["reward", "samples"])
def test_anchor_on_other_than_the_metric_is_refused(tiny_model_dir, anchor_on):
    """Its anchor checks score a prompt per dev input on the metric; the flag would be ignored."""
    config = make_config(tiny_model_dir, anchor_on=anchor_on)
    with pytest.raises(UserError, match=f"--anchor-on {anchor_on} does not apply"):
        ConditionedPPO(config, make_ctx(tiny_model_dir))


def test_resume_gives_the_same_conditioned_run(tiny_model_dir, tmp_path):
    def run(out, steps, resume=False):
        torch.manual_seed(0)
        config = make_config(tiny_model_dir, out=out, steps=steps, anchor_every=2)
        trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
        return trainer, trainer.train(resume=resume)

    straight, summary = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed, summary_b = run(tmp_path / "b", 4, resume=True)
    a, b = straight.algorithm.tensors(), resumed.algorithm.tensors()
    assert a.keys() == b.keys() and any(k.startswith("best.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["agent"]["rows"] == summary_b["agent"]["rows"]
    assert summary["agent"]["test"] == summary_b["agent"]["test"]
    assert summary["prompts"] == summary_b["prompts"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algo", "sql"], "--conditioning input needs the instruction agent of --algo appo"),
        (["--algo", "best-of-n"], "best-of-n learns one prompt for the whole task"),
    ],
)
def test_conditioning_input_is_refused_for_other_algorithms(capsys, tmp_path, flags, message):
    code = main(["train", *flags, "--conditioning", "input", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err and not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="--add-manual applies to the instruction agent"):
        TrainConfig.from_dict({"algo": "sql", "add_manual": True})
    with pytest.raises(UserError, match="--add-manual both alternates the task meta-prompts"):
        TrainConfig.from_dict({"algo": "ppo", "conditioning": "input", "add_manual": "both"})
    with pytest.raises(UserError, match="--agent-temperature applies to the instruction agent"):
        TrainConfig.from_dict({"algo": "sparse-sql", "agent_temperature": 0.7})
    with pytest.raises(UserError, match="--select-on dev.train scores fixed prompts"):
        TrainConfig.from_dict({"algo": "appo", "conditioning": "input", "select_on": "dev+train"})


def test_train_then_eval_agent_on_the_command_line(capsys, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    tiny = f"--agent {tiny_model_dir} --target {tiny_model_dir} --dtype float32"
    flags = "--algo appo --conditioning input --steps 2 --prompts-per-step 2 --num-shots 2 "
    flags += "--max-new-tokens 6 --ppo-epochs 1 --anchor-every 1 --no-progress --out"
    assert main(["train", *tiny.split(), *flags.split(), str(run_dir)]) == 0
    stdout = capsys.readouterr().out
    best = json.loads((run_dir / "best_prompts.json").read_text())
    assert best["conditioning"] == "input" and best["best_prompt"] is None
    agent = best["agent"]
    assert best["prompts"][0]["prompt"] == PER_INPUT and agent["test"] == best["prompts"][0]["test"]
    assert agent["n"] == 32 and agent["seconds_per_input"] > 0 and len(agent["rows"]) == 10
    assert "s of agent generation per test input" in stdout

    out = tmp_path / "eval.json"
    argv = ["eval", "--agent", str(run_dir), "--split", "test", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "accuracy" in stdout and "s per input" in stdout and "prompt" in stdout
    result = json.loads(out.read_text())
    assert result["accuracy"] == agent["test"] and result["n"] == 32
    assert [r["prompt"] for r in result["rows"]] == [r["prompt"] for r in agent["rows"]]

    code = main(["transfer", str(run_dir), "--targets", tiny_model_dir])
    err = capsys.readouterr().err
    assert code == 2 and "has no one prompt to transfer" in err
    code = main(["eval", "--agent", str(tmp_path), "--split", "test"])
    assert code == 2 and "is not a training run" in capsys.readouterr().err
