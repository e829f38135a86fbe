"""The prompt a run returns: the pool's best, or the manual prompt it does not beat on dev."""

import math

import pytest
import torch

from stableprompt.cli import format_summary
from stableprompt.contexts import TextContext
from stableprompt.selection import (
    against_manual,
    returned_prompt,
    split_half_reliability,
    split_halves,
)
from stableprompt.tasks import get_task
from stableprompt.tasks.metrics import sign_test
from tests.test_verbalizers import PromptDependentTarget, sentiment_examples


def test_sign_test_is_the_binomial_tail():
    assert sign_test(0, 0) == 1.0  # no disagreement: no evidence
    assert sign_test(5, 0) == 1 / 32
    assert sign_test(3, 1) == pytest.approx(5 / 16)
    assert sign_test(0, 4) == 1.0
    # 10 wins and 4 losses: the upper tail of Binomial(14, 1/2)
    tail = sum(math.comb(14, k) for k in range(10, 15)) / 2**14
    assert sign_test(10, 4) == pytest.approx(tail) and 0.08 < tail < 0.1


def test_against_manual_counts_the_dev_examples_each_prompt_wins():
    """ "Rated:" with its own words is right on all 8 dev examples, "It was" with the run's
    words on 6: 2 wins, no loss, p = 1/4."""
    examples = sentiment_examples()
    task = get_task("sst-2")
    ctx = TextContext(task, {"train": examples, "dev": examples}, PromptDependentTarget())
    rated_dev = ctx.example_scores(["Rated:"], "dev", [" awful", " wonderful"])[0]
    manual_dev = ctx.example_scores(["It was"], "dev", [" bad", " good"])[0]
    assert against_manual(rated_dev, manual_dev) == {"wins": 2, "losses": 0, "p": 0.25}
    # the other way round the learned prompt never wins
    assert against_manual(manual_dev, rated_dev) == {"wins": 0, "losses": 2, "p": 1.0}


def test_returned_prompt_keeps_the_manual_one_without_evidence():
    pool = [{"prompt": "x y", "dev": 0.9, "test": 0.7}]
    manual = {"prompt": "It was", "dev": 0.8, "test": 0.8}
    weak, strong = {"wins": 4, "losses": 1, "p": 0.1875}, {"wins": 8, "losses": 0, "p": 1 / 256}
    assert returned_prompt(pool, manual, weak, 0.1) == manual | {"source": "manual", "check": weak}
    assert returned_prompt(pool, manual, strong, 0.1)["prompt"] == "x y"
    assert returned_prompt(pool, manual, weak, 1.0)["source"] == "learned"  # the check is off
    assert returned_prompt(pool, None, None, 0.1)["source"] == "learned"  # nothing to beat
    assert returned_prompt([], manual, None, 0.1) is None


def halves_of(quality: torch.Tensor, examples: int, seed: int) -> list[list[float]]:
    """Each prompt's mean 0/1 score on the even and the odd examples, each example correct with
    the prompt's probability `quality`."""
    generator = torch.Generator().manual_seed(seed)
    return split_halves(torch.bernoulli(quality[:, None].expand(-1, examples), generator=generator))


def test_split_half_reliability_tells_real_differences_from_noise():
    differ = torch.linspace(0.2, 0.8, 30)  # prompts that truly differ, 200 examples each
    assert split_half_reliability(halves_of(differ, 200, 0)) > 0.9
    for seed in range(5):  # the same quality: what dev tells apart is the examples' noise
        assert 0.0 <= split_half_reliability(halves_of(torch.full((30,), 0.6), 200, seed)) < 0.5
    assert split_half_reliability([[0.5, 0.6], [0.7, 0.9]]) is None  # too few to correlate
    assert split_half_reliability([[0.5, 0.5]] * 4) is None  # nothing varies
    assert split_half_reliability([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]]) == 0.0  # r = -1


def test_the_summary_says_how_well_dev_told_the_prompts_apart():
    summary = {"prompts": [{"prompt": "a b", "dev": 0.6}], "steps": 3, "target_calls": 90}
    assert "dev reliability" not in format_summary(summary | {"dev_reliability": None}, "out")
    text = format_summary(summary | {"dev_reliability": 0.0, "dev_prompts_scored": 41}, "out")
    assert "dev reliability over the 41 prompts scored: 0.00 (split-half; near 0" in text
    assert "e.g. --select-on dev+train, may" in text  # not said to a run that chose on it
    pooled = summary | {"dev_reliability": 0.9, "dev_prompts_scored": 3, "select_on": "dev+train"}
    assert "more search will not help)" in format_summary(pooled, "out")
