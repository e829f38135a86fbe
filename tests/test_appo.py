"""AdaptivePPO + InstructionAgent on a tiny random llama (the PPO math itself: test_ppo.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

from stableprompt.algorithms.ppo import (
    AdaptivePPO,
    copy_trainable_state,
    masked_mean,
    ppo_loss,
)
from stableprompt.config import TrainConfig
from stableprompt.contexts import TextContext
from stableprompt.models import LocalScorer, load_lm
from stableprompt.tasks import Example, get_task
from stableprompt.trainer import Trainer

POS = ["the movie was great", "a very good film", "fun plot and great acting", "I love it"]
NEG = ["the movie was terrible", "a very bad film", "boring plot", "I hate it"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls gain nothing from threads, and on a busy machine OpenMP barriers make them
    ~30x slower; restore the setting for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def splits() -> dict[str, list[Example]]:
    train = [Example(t, 1) for t in POS[:3]] + [Example(t, 0) for t in NEG[:3]]
    dev = [
        Example(POS[3], 1),
        Example(NEG[3], 0),
        Example("it is good", 1),
        Example("it is bad", 0),
    ]
    return {"train": train, "dev": dev, "test": [Example("not fun", 0), Example("okay", 1)]}


def make_ctx(model_dir: str) -> TextContext:
    target, tokenizer = load_lm(model_dir, dtype="float32", shared=True)
    return TextContext(get_task("sst-2"), splits(), LocalScorer(target, tokenizer))


def make_config(model_dir: str, out="unused", **overrides) -> TrainConfig:
    values = dict(
        algo="appo",
        agent=model_dir,
        target=model_dir,
        dtype="float32",
        out=str(out),
        num_shots=2,
        max_new_tokens=6,
        prompts_per_step=3,
        ppo_epochs=2,
        lr=1e-2,
        train_examples=4,
        anchor_every=1,
        eval_every=2,
        save_every=2,
        steps=4,
    )
    return TrainConfig(**{**values, **overrides})


def make_algo(model_dir: str, **overrides) -> AdaptivePPO:
    torch.manual_seed(0)
    return AdaptivePPO(make_config(model_dir, **overrides), make_ctx(model_dir))


def full_kl(algo: AdaptivePPO, weights) -> float:
    """Exact KL(agent || reference) summed over the vocabulary, on a fixed sampled response."""
    agent = algo.agent
    torch.manual_seed(1)
    samples = agent.sample(algo.eval_query, 3, 6)
    with torch.no_grad():
        logp, _ = agent.forward_logprobs_values(algo.eval_query, samples.response, full=True)
        with agent.using_weights(weights):
            ref, _ = agent.forward_logprobs_values(algo.eval_query, samples.response, full=True)
    per_token = (logp.exp() * (logp - ref)).sum(-1)
    return masked_mean(per_token, samples.mask).item()


@pytest.mark.parametrize("reference", ["anchor", "initial", "previous"])
def test_kl_zero_for_identical_policies_then_positive(tiny_model_dir, reference):
    algo = make_algo(tiny_model_dir, reference=reference, anchor_every=100)
    assert algo.reference == reference
    assert full_kl(algo, algo.reference_weights()) == 0.0
    first = algo.train_step(0)
    assert first["kl"] == 0.0  # the rollout policy IS the reference before any update
    assert full_kl(algo, algo.reference_weights()) > 1e-6
    second = algo.train_step(1)
    assert second["kl"] != 0.0 and second["kl_coef"] > 0
    for key in ("reward_mean", "reward_std", "prompt", "pg_loss", "vf_loss", "kl_coef"):
        assert key in second


def test_ppo_algo_name_means_initial_reference_without_anchor(tiny_model_dir):
    algo = make_algo(tiny_model_dir, algo="ppo", anchor_every=1)
    assert algo.reference == "initial" and algo.anchor_state is None
    assert "anchor_event" not in algo.train_step(0)


def test_only_lora_and_value_head_train(tiny_model_dir):
    algo = make_algo(tiny_model_dir, anchor_every=100)
    agent = algo.agent
    trainable = {n for n, p in agent.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    assert all("lora_" in n or n.startswith("value_head.") for n in trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if "lora_" in n}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj"}
    algo.train_step(0)  # lora_B starts at 0, so lora_A only gets gradient after an update
    agent.zero_grad()
    samples = agent.sample(algo.eval_query, 2, 6)
    logprobs, values = agent.forward_logprobs_values(algo.eval_query, samples.response)
    (logprobs.sum() + values.sum()).backward()
    for name, p in agent.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_cached_context_matches_a_plain_forward(tiny_model_dir):
    """At init (LoRA B = 0) the policy is the base LM: the cached-context log-probs must equal a
    plain forward over [meta-prompt, response]. Also checks the response mask's shape."""
    algo = make_algo(tiny_model_dir)
    agent, query = algo.agent, algo.eval_query
    torch.manual_seed(3)
    samples = agent.sample(query, 4, 6)
    mask = samples.mask
    assert (mask[:, 0] == 1).all() and (mask[:, 1:] <= mask[:, :-1]).all()  # 1...1 0...0
    assert all(t.strip() and "\n" not in t for t in samples.texts)
    with torch.no_grad():
        logprobs, _ = agent.forward_logprobs_values(query, samples.response)
        ids = torch.cat([query.ids.expand(4, -1), samples.response], 1)
        full = F.log_softmax(agent.causal(input_ids=ids).logits.float(), -1)
    width = samples.response.shape[1]
    plain = full[:, -width - 1 : -1].gather(-1, samples.response[..., None]).squeeze(-1)
    torch.testing.assert_close(logprobs * mask, plain * mask, atol=1e-5, rtol=1e-5)


def test_sampling_records_the_policys_logprobs_and_values(tiny_model_dir):
    """PPO's old log-probs and values come from the decoding pass: they must be what a forward
    over the finished response gives, also once LoRA has moved away from zero."""
    algo = make_algo(tiny_model_dir, anchor_every=100)
    algo.train_step(0)
    agent, query = algo.agent, algo.eval_query
    for temperature in (1.0, 0.7):
        torch.manual_seed(5)
        samples = agent.sample(query, 4, 6, temperature=temperature)
        with torch.no_grad():
            logprobs, values = agent.forward_logprobs_values(query, samples.response, temperature)
        mask = samples.mask
        torch.testing.assert_close(samples.logprobs * mask, logprobs * mask, atol=1e-5, rtol=0)
        torch.testing.assert_close(samples.values * mask, values * mask, atol=1e-5, rtol=0)


def test_a_tempered_agent_is_updated_as_the_policy_it_sampled_from(tiny_model_dir):
    """--agent-temperature: PPO's first epoch must see the tempered policy that wrote the
    samples (ratio 1), not the untempered one (dropout off, one epoch, so nothing else moves)."""
    algo = make_algo(tiny_model_dir, agent_temperature=0.5, lora_dropout=0.0, ppo_epochs=1)
    metrics = algo.train_step(0)
    assert metrics["approx_kl"] < 1e-8 and metrics["clipfrac"] == 0.0


def test_packed_rows_give_the_padded_forwards_values_and_gradients(tiny_model_dir):
    """With the response mask the rows run packed into one sequence (no compute on padding):
    log-probs, values and the LoRA gradients of a masked loss must be the padded forward's."""
    algo = make_algo(tiny_model_dir, anchor_every=100)
    algo.train_step(0)  # LoRA B away from zero, so that the adapter's gradients all flow
    agent, query = algo.agent, algo.eval_query
    torch.manual_seed(7)
    samples = agent.sample(query, 4, 8)
    # rows ending after 8, 3, 5 and 1 tokens (a random tiny model rarely writes a stop token)
    mask = (torch.arange(8) < torch.tensor([[8], [3], [5], [1]])).long()
    results = []
    for packed in (False, True):
        agent.zero_grad()
        logprobs, values = agent.forward_logprobs_values(
            query, samples.response, mask=mask if packed else None
        )
        (masked_mean(logprobs, mask) + masked_mean(values**2, mask)).backward()
        grads = {n: p.grad.clone() for n, p in agent.named_parameters() if p.requires_grad}
        results.append((logprobs * mask, values * mask, grads))
    (logprobs, values, grads), (packed_lp, packed_values, packed_grads) = results
    torch.testing.assert_close(packed_lp, logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_values, values, atol=1e-5, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_decoding_folds_lora_into_the_weights_and_puts_them_back(tiny_model_dir):
    """sample() decodes with W + scale * B @ A: with LoRA far from zero its log-probs must still
    be the adapter's, the parameters afterwards the same objects with the same values, and the
    fold skipped when the adapter is off (the initial agent) or dropout is on."""
    algo = make_algo(tiny_model_dir)
    agent, query = algo.agent, algo.eval_query
    torch.manual_seed(6)
    with torch.no_grad():
        for name, p in agent.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    before = {name: (p, p.detach().clone()) for name, p in agent.named_parameters()}
    q_proj = agent.lm.get_base_model().model.layers[0].self_attn.q_proj
    base = before["lm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"][0]
    with agent.merged_lora():
        assert q_proj.disable_adapters and not q_proj.base_layer.weight.requires_grad
        assert (q_proj.base_layer.weight - base).abs().max() > 0.01  # the update, folded in
    for name, p in agent.named_parameters():
        assert p is before[name][0] and torch.equal(p, before[name][1]), name
    samples = agent.sample(query, 4, 6)
    with torch.no_grad():
        logprobs, values = agent.forward_logprobs_values(query, samples.response)
        with agent.using_weights(None):
            initial, _ = agent.forward_logprobs_values(query, samples.response)
    mask = samples.mask
    torch.testing.assert_close(samples.logprobs * mask, logprobs * mask, atol=1e-4, rtol=0)
    torch.testing.assert_close(samples.values * mask, values * mask, atol=1e-4, rtol=0)
    assert ((logprobs - initial).abs() * mask).max() > 0.1  # LoRA changed the policy
    with agent.using_weights(None), agent.merged_lora():  # adapter off: nothing to fold
        assert q_proj.base_layer.weight is base
    agent.train()
    with agent.merged_lora():  # dropout on: the fold would drop it
        assert q_proj.base_layer.weight is base
    agent.eval()


def test_clipped_loss_on_agent_matches_hand_computation(tiny_model_dir):
    algo = make_algo(tiny_model_dir, anchor_every=100)
    agent, query = algo.agent, algo.eval_query
    torch.manual_seed(4)
    samples = agent.sample(query, 3, 6)
    with torch.no_grad():
        old, old_values = agent.forward_logprobs_values(query, samples.response)
    algo.train_step(0)  # move the policy so that ratios differ from 1
    new, values = agent.forward_logprobs_values(query, samples.response)
    mask = samples.mask.float()
    adv = torch.linspace(-1.5, 1.5, mask.numel()).view_as(mask)
    returns = old_values + 0.5
    loss, stats = ppo_loss(
        new,
        old,
        adv,
        values,
        old_values,
        returns,
        samples.mask,
        clip_range=0.2,
        clip_range_value=0.2,
        vf_coef=0.1,
    )
    n = mask.sum()
    ratio = (new - old).exp()
    pg = (torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)) * mask).sum() / n
    v_clip = old_values + (values - old_values).clamp(-0.2, 0.2)
    vf = 0.5 * (torch.max((values - returns) ** 2, (v_clip - returns) ** 2) * mask).sum() / n
    assert stats["pg_loss"] == pytest.approx(pg.item(), rel=1e-5)
    assert loss.item() == pytest.approx((pg + 0.1 * vf).item(), rel=1e-5)
    assert (ratio * mask - mask).abs().max() > 1e-4  # the update really moved the policy


def test_anchor_update_and_rollback_fire_exactly_at_thresholds(tiny_model_dir):
    # value head at 0: with first-batch step 0 moves the stored anchor's bias (tested below)
    algo = make_algo(tiny_model_dir, anchor_every=1, value_init="zero")
    initial = copy_trainable_state(algo.agent)
    # the anchor's prompt scores 0.50 when first scored; after the update it is the agent's
    agent_scores = iter([0.55, 0.5501, 0.4501, 0.4500, 0.5])
    algo.greedy_prompt = lambda weights, index=0: (
        "anchor" if weights is not None else f"v{algo.version}"
    )
    algo.dev_scores = lambda prompts: [
        0.50 if p == "anchor" else next(agent_scores) for p in prompts
    ]

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert algo.train_step(0)["anchor_event"] == "keep"  # +0.05 exactly: no update
    assert same(algo.anchor_state, initial)
    assert algo.train_step(1)["anchor_event"] == "update"
    anchor = {k: v.clone() for k, v in algo.anchor_state.items()}
    assert same(anchor, copy_trainable_state(algo.agent)) and not same(anchor, initial)
    assert algo.train_step(2)["anchor_event"] == "keep"  # -0.1 exactly (0.4501 vs 0.5501)
    assert same(algo.anchor_state, anchor)  # a real copy: training the agent left it alone
    assert not same(copy_trainable_state(algo.agent), anchor)
    assert algo.optimizer.state
    metrics = algo.train_step(3)
    assert metrics["anchor_event"] == "rollback"
    assert metrics["agent_dev"] == 0.45 and metrics["anchor_dev"] == 0.5501
    assert same(copy_trainable_state(algo.agent), anchor)  # bit for bit
    assert not algo.optimizer.state  # Adam moments reset
    algo.train_step(4)  # and training goes on from the anchor with the fresh optimizer
    assert all(p.grad is not None for p in algo.optimizer.param_groups[0]["params"])


def test_an_agent_that_writes_the_anchors_prompt_is_kept_without_target_calls(tiny_model_dir):
    """The anchor's prompt is scored once; a check whose agent writes the same text scores
    nothing (same text, same dev score) and keeps; a different text is scored alone."""
    algo = make_algo(tiny_model_dir, anchor_every=1)
    scored = []
    algo.dev_scores = lambda prompts: scored.extend(prompts) or [0.5] * len(prompts)
    algo.greedy_prompt = lambda weights, index=0: "same"
    metrics = [algo.train_step(step) for step in range(3)]
    assert scored == ["same"]  # the anchor's, at the first check only
    assert [m["anchor_event"] for m in metrics] == ["keep"] * 3
    assert all(m["agent_dev"] == m["anchor_dev"] == 0.5 for m in metrics)
    algo.greedy_prompt = lambda weights, index=0: "same" if weights is not None else "new"
    assert algo.train_step(3)["anchor_event"] == "keep"
    assert scored == ["same", "new"]


def test_anchor_on_reward_compares_the_train_reward_over_dev(tiny_model_dir):
    """`--anchor-on reward`: both prompts get the train reward on the dev examples, and the
    thresholds apply to it; the dev metric (0 for both here) is never asked for."""
    algo = make_algo(
        tiny_model_dir, anchor_every=1, anchor_on="reward", anchor_update_threshold=0.5
    )
    algo.dev_scores = lambda prompts: pytest.fail("the dev metric was used")
    seen = []

    def rewards(prompts, examples):
        seen.append(len(examples))
        return torch.tensor([-9.0 if p == "anchor" else -8.4 for p in prompts])

    algo.prompt_rewards = rewards
    algo.greedy_prompt = lambda weights, index=0: "anchor" if weights is not None else "agent"
    metrics = algo.train_step(0)
    assert metrics["anchor_event"] == "update"  # -8.4 beats -9.0 by more than 0.5
    assert metrics["agent_dev"] == pytest.approx(-8.4) and metrics["anchor_dev"] == -9.0
    assert seen[-2:] == [len(algo.ctx.splits["dev"])] * 2


def test_anchor_on_samples_compares_the_sampled_rewards_without_target_calls(tiny_model_dir):
    """`--anchor-on samples`: the agent's score is the mean train reward of what it sampled since
    the last check, the anchor's the mean of the window that made it (the first window's for the
    initial agent); no greedy prompt is written and nothing is scored on dev."""
    algo = make_algo(
        tiny_model_dir,
        anchor_every=2,
        anchor_on="samples",
        anchor_update_threshold=0.5,
        anchor_rollback_threshold=1.0,
    )
    algo.dev_scores = lambda prompts: pytest.fail("dev was scored")
    algo.greedy_prompt = lambda weights, index=0: pytest.fail("a greedy prompt was written")
    initial = copy_trainable_state(algo.agent)

    def steps(first: int, rewards: tuple[float, float]) -> dict:
        for step, reward in zip((first, first + 1), rewards):
            algo.empty_reward = torch.tensor(reward)  # an empty sample earns the same
            algo.prompt_rewards = lambda prompts, examples, r=reward: torch.full((len(prompts),), r)
            metrics = algo.train_step(step)
        return metrics

    assert algo.step_calls(1) == algo.calls_per_step()  # a check costs no target calls
    first = steps(0, (-10.0, -11.0))
    assert first["anchor_event"] == "keep"  # the first window is the initial anchor's score
    assert first["agent_dev"] == first["anchor_dev"] == -10.5
    better = steps(2, (-9.5, -9.9))  # mean -9.7: 0.8 ahead, more than 0.5
    assert better["anchor_event"] == "update" and better["agent_dev"] == pytest.approx(-9.7)
    anchor = copy_trainable_state(algo.agent)
    assert not all(torch.equal(anchor[k], initial[k]) for k in anchor)
    worse = steps(4, (-10.5, -11.0))  # mean -10.75: 1.05 behind the anchor's -9.7
    assert worse["anchor_event"] == "rollback"
    assert worse["anchor_dev"] == pytest.approx(-9.7)
    restored = copy_trainable_state(algo.agent)
    assert all(torch.equal(restored[k], anchor[k]) for k in anchor)


def first_step_at_score(model_dir: str, score: float, **overrides) -> tuple:
    """An algorithm after `train_step(0)` with every prompt scoring `score`, the mean of the
    values its rollout recorded, and the step's metrics."""
    algo = make_algo(model_dir, **overrides)
    algo.prompt_rewards = lambda prompts, examples: torch.full((len(prompts),), score)
    algo.empty_reward = torch.tensor(score)
    rollout, seen = algo.rollout, []

    def recording_rollout(step):
        query, samples, examples = rollout(step)
        seen.append(masked_mean(samples.values, samples.mask).item())
        return query, samples, examples

    algo.rollout = recording_rollout
    metrics = algo.train_step(0)
    return algo, seen[0], metrics


@pytest.mark.parametrize("reference", ["anchor", "previous"])
def test_value_init_first_batch_starts_the_values_at_the_first_mean_score(
    tiny_model_dir, reference
):
    """`--value-init first-batch`: at step 0 the value head's bias (and the stored anchor's,
    which a rollback restores) moves so the rollout's values average the batch's mean score; the
    value loss then starts near 0 instead of near 0.5 * score**2."""
    zero, _, zero_metrics = first_step_at_score(
        tiny_model_dir, -10.0, reference=reference, value_init="zero"
    )
    algo, start, metrics = first_step_at_score(
        tiny_model_dir, -10.0, reference=reference, value_init="first-batch"
    )
    assert zero_metrics["vf_loss"] > 20 and metrics["vf_loss"] < 1
    bias = algo.agent.value_head.bias.item()
    assert bias - zero.agent.value_head.bias.item() == pytest.approx(-10.0 - start, abs=0.1)
    # the stored anchor shifted once (under `previous` it starts as one dict with the previous
    # agent's state), and the previous agent, copied before this step's update, with it
    states = ["anchor_state"] + (["previous_state"] if reference == "previous" else [])
    for state in states:
        stored = [getattr(a, state)["value_head.bias"].item() for a in (algo, zero)]
        assert stored[0] - stored[1] == pytest.approx(-10.0 - start, abs=1e-5), state


@pytest.mark.parametrize("anchor_on", ["metric", "samples"])
def test_resume_gives_the_same_run(tiny_model_dir, tmp_path, anchor_on):
    # under samples, checks every 3 steps: the checkpoint at step 2 holds a part-filled window
    anchor = {"anchor_on": anchor_on, "anchor_every": 3 if anchor_on == "samples" else 1}

    def run(out, steps, resume=False):
        torch.manual_seed(0)
        config = make_config(tiny_model_dir, out=out, steps=steps, **anchor)
        trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
        summary = trainer.train(resume=resume)
        return trainer, summary

    straight, summary = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed, summary_b = run(tmp_path / "b", 4, resume=True)
    a, b = straight.algorithm.tensors(), resumed.algorithm.tensors()
    assert a.keys() == b.keys() and any(k.startswith("anchor.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit
    assert straight.algorithm.kl_ctl.value == pytest.approx(resumed.algorithm.kl_ctl.value)
    assert summary["best_prompt"] == summary_b["best_prompt"]

    def records(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    ra, rb = records("a"), records("b")
    assert [r["step"] for r in rb] == [0, 1, 2, 3, 4]
    assert [r.get("prompts") for r in ra] == [r.get("prompts") for r in rb]
    assert [r.get("anchor_event") for r in ra] == [r.get("anchor_event") for r in rb]
    assert [r["calls"] for r in ra] == [r["calls"] for r in rb]  # the anchor's score is kept
    assert [r.get("agent_dev") for r in ra] == [r.get("agent_dev") for r in rb]
    every = anchor["anchor_every"]
    assert all(("anchor_event" in r) == (r["step"] % every == 0) for r in ra[1:])  # 1-based


def test_a_sample_that_writes_nothing_gets_the_lowest_reward(tiny_model_dir):
    """An empty sample falls back to a default prompt for the record, but it must not earn that
    prompt's reward, or the agent learns to say nothing."""
    from stableprompt.algorithms.ppo import EMPTY_PROMPT_REWARD

    algo = make_algo(tiny_model_dir, anchor_every=100, train_examples=None)
    assert algo.empty_reward == EMPTY_PROMPT_REWARD
    sample = algo.agent.sample

    def first_row_empty(*args, **kwargs):
        out = sample(*args, **kwargs)
        out.empty[0] = True
        return out

    algo.agent.sample = first_row_empty
    metrics = algo.train_step(0)
    real = algo.ctx.rewards(metrics["prompts"], algo.ctx.splits["train"], "appo")
    expected = torch.cat([torch.tensor([EMPTY_PROMPT_REWARD]), real[1:]])
    assert metrics["reward_mean"] == pytest.approx(expected.mean().item(), abs=1e-5)
    assert (real >= -0.1).all() and EMPTY_PROMPT_REWARD < -0.1  # below any real prompt


def test_empty_prompts_score_below_the_log_likelihood_floor():
    """Mean answer log-likelihoods are negative: there -1 would be a prize, not a penalty."""
    from types import SimpleNamespace

    from stableprompt.algorithms.ppo import EMPTY_PROMPT_REWARD, empty_prompt_reward
    from stableprompt.contexts.text import ANSWER_LOGPROB_FLOOR

    for reward in ("metric", "likelihood"):
        ctx = SimpleNamespace(generation=True, generation_reward=reward)
        assert empty_prompt_reward(ctx) == EMPTY_PROMPT_REWARD
    ctx = SimpleNamespace(generation=True, generation_reward="loglikelihood")
    assert empty_prompt_reward(ctx) < ANSWER_LOGPROB_FLOOR


def test_evaluation_adds_the_best_sampled_prompts_by_train_reward(tiny_model_dir):
    from stableprompt.algorithms.ppo import SAMPLED_PER_EVAL

    algo = make_algo(tiny_model_dir, anchor_every=100, prompts_per_step=3)
    scripted = iter([torch.tensor([1.0, 5.0, 2.0]), torch.tensor([4.0, 0.5, 3.0])])
    algo.ctx.rewards = lambda prompts, examples, kind: next(scripted)
    sampled = [algo.train_step(step)["prompts"] for step in range(2)]
    by_reward = [sampled[0][1], sampled[1][0], sampled[1][2], sampled[0][2]]
    expected = list(dict.fromkeys(by_reward))[:SAMPLED_PER_EVAL]
    assert algo.eval_prompts()[1:] == expected
    assert algo.prompts_per_eval() == 1 + SAMPLED_PER_EVAL
    restored = make_algo(tiny_model_dir, anchor_every=100)
    restored.load_state(algo.state())
    assert restored.eval_prompts()[1:] == expected


def test_roomy_cache_layer_grows_and_matches_concatenation():
    from transformers.cache_utils import DynamicLayer

    from stableprompt.models.kv_cache import RoomyLayer

    torch.manual_seed(0)
    keys, values = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    roomy, plain = RoomyLayer.repeated(keys, values, rows=3, room=1), DynamicLayer()
    plain.update(keys.expand(3, -1, -1, -1), values.expand(3, -1, -1, -1))
    for width in (1, 3, 2):  # the second update overflows the room and doubles the buffer
        new_k, new_v = torch.randn(3, 2, width, 4), torch.randn(3, 2, width, 4)
        got, want = roomy.update(new_k, new_v), plain.update(new_k, new_v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert roomy.get_seq_length() == 11 and keys.shape == (1, 2, 5, 4)
    with pytest.raises(NotImplementedError):  # would leave the buffers out of step
        roomy.crop(-1)
