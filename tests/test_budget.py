"""The budget holds: no algorithm's run passes --max-target-calls (test scoring apart)."""

import dataclasses
import json
from pathlib import Path

import pytest

from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.errors import UserError
from stableprompt.trainer import Trainer

from .conftest import SHARED_DATA
from .test_appo import make_config as appo_config
from .test_appo import make_ctx as appo_ctx
from .test_appo import one_thread  # noqa: F401 (autouse: tiny matmuls on one thread)
from .test_trainer import make_config, make_ctx

CAP = 54  # train 4, dev 4 examples. sql: after 2 steps 36 calls (4 + 2 x 16); the 3rd step fits
# (52) but not the evaluation that follows it (56): a check of the step alone lets it overrun


def run(config: TrainConfig, ctx) -> tuple[dict, list[dict]]:
    summary = Trainer(config, ctx, progress=False).train()
    lines = (Path(config.out) / "metrics.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in lines]


SETTINGS = {  # on top of test_trainer's tiny token policy: 4 prompts of 3 tokens per step
    "sql": {"eval_samples": 0},
    "sparse-sql": {"pin_top_k": 50},
    "random": {"prompts_per_step": 3},
    "manual": {},
    "in-context": {"num_shots": 2},
    "best-of-n": {"prompts_per_step": 2, "num_shots": 2, "max_new_tokens": 6},
}


@pytest.mark.parametrize("algo", list(SETTINGS))
def test_token_policies_and_baselines_stay_within_the_cap(tiny_model_dir, tmp_path, algo):
    settings = {"steps": 50, "eval_every": 3, "max_target_calls": CAP, **SETTINGS[algo]}
    config = make_config(tiny_model_dir, tmp_path / algo, algo=algo, **settings)
    summary, records = run(config, make_ctx(tiny_model_dir))
    assert max(r["calls"] for r in records) <= summary["target_calls"] <= CAP
    if algo in ("sql", "sparse-sql", "best-of-n"):  # trained until the budget stopped it
        assert 0 < summary["steps"] < 50
        assert "dev_accuracy" in records[-1]  # and its last step was evaluated


@pytest.mark.parametrize("algo", ["ppo", "appo"])
def test_instruction_agents_stay_within_the_cap(tiny_model_dir, tmp_path, algo):
    # 3 prompts x 4 train examples per step, and the greedy prompt's dev scoring (4) reserved
    # after every step: ppo, after the step-0 evaluation (4), takes 4 steps (52 calls) and then
    # scores what the 12 left pay for. appo adds an anchor check (2 prompts x 4 dev) every 2nd
    # step, which a per-step average would let pass the cap: 3 steps (48), then 12 + 8 + 4 > 16.
    # Reserving a whole evaluation (4 prompts x 4 dev) after every step stopped ppo at 3 too.
    settings = {"steps": 20, "eval_every": 10, "anchor_every": 2, "max_target_calls": 64}
    config = appo_config(tiny_model_dir, tmp_path / algo, algo=algo, **settings)
    summary, records = run(config, appo_ctx(tiny_model_dir))
    assert max(r["calls"] for r in records) <= summary["target_calls"] <= 64
    assert summary["steps"] == {"ppo": 4, "appo": 3}[algo]
    assert "dev_accuracy" in records[-1]  # the step the budget ended on was evaluated
    if algo == "ppo":  # its last evaluation scored the new prompts the 12 calls paid for
        assert summary["target_calls"] == 64
    if algo == "appo":
        assert [r.get("anchor_event") is not None for r in records[1:]] == [False, True, False]


def test_appo_projects_each_anchor_check_on_its_own_step(tiny_model_dir):
    from stableprompt.algorithms.ppo import AdaptivePPO

    algo = AdaptivePPO(appo_config(tiny_model_dir, anchor_every=2), appo_ctx(tiny_model_dir))
    dev = len(algo.ctx.splits["dev"])
    assert [algo.step_calls(s) - algo.calls_per_step() for s in range(4)] == [
        0,
        2 * dev,
        0,
        2 * dev,
    ]


def test_a_cap_below_the_first_evaluation_is_refused_before_spending(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(tiny_model_dir, tmp_path, algo="manual", max_target_calls=3)
    with pytest.raises(UserError, match="cannot pay for the first dev evaluation"):
        Trainer(config, ctx, progress=False).train()
    assert ctx.scorer.calls == 0


def test_label_word_search_is_refused_when_it_would_pass_the_cap(tiny_model_dir, tmp_path):
    scorer = make_ctx(tiny_model_dir).scorer
    data = str(SHARED_DATA / "fsc/16-shot/sst-2/16-42")  # 32 train + 32 dev
    config = make_config(tiny_model_dir, tmp_path, data=data, max_target_calls=50)
    with pytest.raises(UserError, match="choosing label words costs 64 target calls"):
        build_context(config, scorer)
    assert scorer.calls == 0


def test_random_draws_as_many_prompts_as_the_cap_buys(tiny_model_dir, tmp_path):
    # each random prompt costs one scoring on the 4 dev examples: 54 calls buy 13 of them;
    # without a cap (and without --prompts-per-step) it draws one
    config = make_config(tiny_model_dir, tmp_path / "cap", algo="random", max_target_calls=CAP)
    summary, records = run(
        dataclasses.replace(config, prompts_per_step=None), make_ctx(tiny_model_dir)
    )
    assert records[0]["calls"] == summary["target_calls"] == 52
    uncapped = make_config(tiny_model_dir, tmp_path / "free", algo="random", prompts_per_step=None)
    assert run(uncapped, make_ctx(tiny_model_dir))[1][0]["calls"] == 4
