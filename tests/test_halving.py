"""--algo random --halving: prompts raced on dev (and train) by successive halving."""

import json
import math
import random

import pytest
import torch

from stableprompt.algorithms.baselines import RandomRace, halving_rounds, round_calls
from stableprompt.errors import UserError
from stableprompt.selection import split_half_reliability, split_halves
from stableprompt.tasks import Example
from stableprompt.trainer import Trainer

from .test_appo import one_thread  # noqa: F401 (autouse: tiny matmuls on one thread)
from .test_trainer import TEXTS, make_config, make_ctx


def test_rounds_halve_the_prompts_and_double_the_examples():
    assert halving_rounds(40, 4, 30, keep=3) == [(40, 4), (20, 8), (10, 16), (5, 30)]
    assert round_calls([(40, 4), (20, 8), (10, 16), (5, 30)]) == [160, 80, 80, 70]
    # never fewer than `keep` survivors, nor more than are racing; one round when it covers dev
    assert halving_rounds(5, 2, 16, keep=3) == [(5, 2), (3, 4), (3, 8), (3, 16)]
    assert halving_rounds(2, 2, 8, keep=3) == [(2, 2), (2, 4), (2, 8)]
    assert halving_rounds(7, 50, 30, keep=3) == [(7, 30)]


def race_ctx(model_dir: str):
    """The tiny model on 12 dev and 6 train examples, whose dev and train scores are scripted
    so that prompts differ (the tiny random model scores prompts alike): prompt p gets example
    i of a split right where a draw seeded by (split, p, i) falls below p's own seeded quality.
    Calls are counted as the scorer counts them."""
    ctx = make_ctx(model_dir)
    examples = [Example(t, i % 2) for i, t in enumerate(TEXTS)]
    ctx.splits = {**ctx.splits, "dev": examples + examples, "train": examples}
    real = ctx.example_scores

    def example_scores(prompts, split, label_words=None, rows=None):
        if split == "test":
            return real(prompts, split, label_words, rows)
        rows = range(len(ctx.splits[split])) if rows is None else rows
        ctx.scorer.calls += len(prompts) * len(rows)
        quality = {p: random.Random(p).random() for p in prompts}
        return torch.tensor(
            [
                [float(random.Random(f"{split}|{p}|{i}").random() < quality[p]) for i in rows]
                for p in prompts
            ]
        )

    ctx.example_scores = example_scores
    return ctx


def test_a_race_keeps_the_better_half_and_scores_survivors_on_all_of_dev(tiny_model_dir, tmp_path):
    ctx = race_ctx(tiny_model_dir)
    config = make_config(
        tiny_model_dir,
        tmp_path,
        algo="random",
        halving=3,
        max_target_calls=125,
        pool_size=2,
        prompts_per_step=None,
    )
    trainer = Trainer(config, ctx, progress=False)
    race = trainer.algorithm
    assert isinstance(race, RandomRace)
    # 125 calls: 20 prompts race (20 x 3 + 10 x 3 + 5 x 6 = 120; 21 would cost 132), where
    # scoring each on all 12 dev examples buys 10
    assert race.rounds == [(20, 3), (10, 6), (5, 12)]
    prompts = race.prompts
    order = random.Random(config.seed).sample(range(12), 12)
    scores = ctx.example_scores(prompts, "dev")  # every prompt on all of dev, to check against
    ctx.scorer.calls = 0  # (not the run's calls)
    first = scores[:, order[:3]].mean(1)
    kept = sorted(sorted(range(20), key=lambda i: -first[i])[:10])

    summary = trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("racing") for r in records[1:]] == [20, 10, 5]
    assert [r["calls"] for r in records] == [0, 60, 90, 120]
    assert summary["target_calls"] == 120 and summary["steps"] == 3
    survivors = {prompts[i] for i in race.alive}
    assert survivors <= {prompts[i] for i in kept}
    second = scores[kept][:, order[:6]].mean(1)
    assert survivors == {prompts[kept[j]] for j in sorted(range(10), key=lambda j: -second[j])[:5]}
    for entry in summary["prompts"]:  # each survivor's dev score is its mean on all of dev
        assert entry["prompt"] in survivors
        assert entry["dev"] == pytest.approx(scores[prompts.index(entry["prompt"])].mean().item())
    assert summary["dev_prompts_scored"] == 5  # reliability: the survivors', in dev's order
    for prompt in survivors:
        halves = split_halves(scores[[prompts.index(prompt)]])[0]
        assert race.dev_halves[prompt] == pytest.approx(halves)
    rows = scores[[prompts.index(p) for p in sorted(survivors, key=prompts.index)]]
    assert summary["dev_reliability"] == pytest.approx(split_half_reliability(split_halves(rows)))
    assert summary["halving"] == [
        {"prompts": 20, "dev_examples": 3},
        {"prompts": 10, "dev_examples": 6},
        {"prompts": 5, "dev_examples": 12},
    ]


def test_a_killed_race_resumes_at_its_round(tiny_model_dir, tmp_path):
    kw = dict(algo="random", halving=3, prompts_per_step=8, pool_size=2, save_every=1)
    whole = Trainer(make_config(tiny_model_dir, tmp_path / "a", **kw), race_ctx(tiny_model_dir))
    expected = whole.train()
    cut = Trainer(make_config(tiny_model_dir, tmp_path / "b", **kw), race_ctx(tiny_model_dir))
    cut.algorithm.total_steps = lambda: 1  # stops after the first round, as a kill would
    cut.train()
    resumed = Trainer(make_config(tiny_model_dir, tmp_path / "b", **kw), race_ctx(tiny_model_dir))
    summary = resumed.train(resume=True)
    assert resumed.algorithm.alive == whole.algorithm.alive
    assert summary["prompts"] == expected["prompts"]
    assert summary["target_calls"] == expected["target_calls"]


def replayed_race(race: RandomRace, full: torch.Tensor) -> list[int]:
    """The prompts a race keeps, replayed on every prompt's scores on all selection examples
    (`full`, NaN where a prompt shows the example) in the race's seeded order."""
    alive = list(range(len(race.prompts)))
    for (_, seen), (keep, _) in zip(race.rounds, race.rounds[1:], strict=False):
        means = full[:, race.order[:seen]].nanmean(1).nan_to_num(-math.inf)
        alive = sorted(sorted(alive, key=lambda i: -means[i])[:keep])
    return alive


def test_a_race_on_dev_and_train_ranks_prompts_on_both(tiny_model_dir, tmp_path):
    ctx = race_ctx(tiny_model_dir)
    kw = dict(algo="random", halving=3, prompts_per_step=12, pool_size=2, select_on="dev+train")
    trainer = Trainer(make_config(tiny_model_dir, tmp_path, **kw), ctx, progress=False)
    race = trainer.algorithm
    assert race.rounds == [(12, 3), (6, 6), (3, 12), (2, 18)]  # 12 dev, then 6 train examples
    prompts = race.prompts
    dev, train = ctx.example_scores(prompts, "dev"), ctx.example_scores(prompts, "train")
    full = torch.cat([dev, train], 1)
    rows = [15, 2, 17, 0]  # train, dev, train, dev: scored in the order asked
    assert torch.equal(race.selection_scores(prompts, rows=rows), full[:, rows])
    ctx.scorer.calls = 0  # (not the run's calls)
    summary = trainer.train()
    assert summary["target_calls"] == 12 * 3 + 6 * 3 + 3 * 6 + 2 * 6
    alive = replayed_race(race, full)
    assert race.alive == alive
    assert {e["prompt"] for e in summary["prompts"]} == {prompts[i] for i in alive}
    for entry in summary["prompts"]:  # each survivor's score is its mean on dev and train
        assert entry["dev"] == pytest.approx(full[prompts.index(entry["prompt"])].mean().item())


def test_a_race_on_train_leaves_out_the_pairs_a_set_shows(tiny_model_dir, tmp_path):
    ctx = race_ctx(tiny_model_dir)  # 12 dev, 6 train examples
    kw = dict(demonstrations=2, demonstrations_from="all", select_on="dev+train", pool_size=2)
    config = make_config(
        tiny_model_dir, tmp_path, algo="random", halving=2, prompts_per_step=16, seed=1, **kw
    )
    trainer = Trainer(config, ctx, progress=False)
    race, prompts = trainer.algorithm, trainer.algorithm.prompts
    shown = [[f"{ex.text} " in p for ex in ctx.splits["train"]] for p in prompts]
    scores = race.selection_scores(prompts, rows=[17, 0, 13])  # train 5, dev 0, train 1
    assert scores.isnan().tolist() == [[row[5], False, row[1]] for row in shown]
    full = race.selection_scores(prompts)
    assert full[:, 12:].isnan().tolist() == shown
    summary = trainer.train()
    assert race.alive == replayed_race(race, full)  # a shown pair counts neither way
    for entry in summary["prompts"]:  # the mean over dev and the train pairs it does not show
        assert entry["dev"] == pytest.approx(full[prompts.index(entry["prompt"])].nanmean().item())


def test_a_racer_with_nothing_to_be_ranked_on_goes_last_and_out_of_the_figures(
    tiny_model_dir, tmp_path
):
    ctx = race_ctx(tiny_model_dir)
    kw = dict(algo="random", halving=3, prompts_per_step=8, pool_size=2)
    trainer = Trainer(make_config(tiny_model_dir, tmp_path, **kw), ctx, progress=False)
    race = trainer.algorithm
    real, asked = race.selection_scores, []

    def selection_scores(prompts, label_words=None, rows=None):
        scores = real(prompts, label_words, rows=rows)
        if not asked:  # the round's leader shows every example of the first round
            scores[scores.mean(1).argmax()] = math.nan
        asked.append((prompts, scores))
        return scores

    race.selection_scores = selection_scores
    trainer.train()
    records = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    (first, scores), (second, _) = asked[:2]
    hidden = scores.isnan().all(1)
    assert hidden.sum() == 1 and first[int(hidden.nonzero())] not in second  # it went out
    others = scores[~hidden].mean(1)
    assert records[1]["reward_mean"] == pytest.approx(others.mean().item())
    assert records[1]["reward_max"] == pytest.approx(others.max().item())


def test_halving_needs_random(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="--halving races the prompts --algo random draws; sql"):
        make_config(tiny_model_dir, tmp_path, algo="sql", halving=4)
