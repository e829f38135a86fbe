"""Multiple-choice QA and generation tasks: metrics, letter mapping, loaders, generation reward."""

from pathlib import Path

import pytest

from stableprompt.contexts.text import ANSWER_LOGPROB_FLOOR, TextContext
from stableprompt.errors import UserError
from stableprompt.models.scoring import LocalScorer
from stableprompt.tasks import (
    Example,
    generation_score,
    get_task,
    list_tasks,
    load_bigbench,
    load_data,
    load_ii_file,
    load_mmlu_csv,
    mc_example,
    mmlu_row_to_example,
)
from stableprompt.tasks.metrics import contains, exact_match, exact_set, token_f1
from stableprompt.tasks.registry import fill_template

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data missing")


def test_metrics_on_hand_made_cases():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("cats", "cat") == 0.0
    # 2 common tokens of 3 predicted and 4 gold: P=2/3, R=1/2 -> F1 = 4/7
    assert token_f1("the big red dog", "a big dog ran home") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0 and token_f1("x", "y") == 0.0
    assert contains("I think it is Paris, France.", "paris") == 1.0
    assert contains("comparison", "paris") == 0.0
    assert exact_set("tortoise, chicken and spider", "chicken, spider, tortoise") == 1.0
    assert exact_set("chicken, spider", "chicken, spider, tortoise") == 0.0
    assert exact_set("a", "a") == 1.0 and exact_set("", "a") == 0.0  # articles kept
    assert generation_score(" 3", ("three", "3"), "exact_match") == 1.0  # best of the answers


def test_letter_mapping_three_and_four_options():
    three = mc_example("Which?", ["x", "y", "z"], 2)
    assert three.text == "Which?\nA. x\nB. y\nC. z" and three.label == 2
    four = mmlu_row_to_example({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1})
    assert four.text.endswith("\nD. d") and four.label == 1
    task = get_task("mmlu")
    assert task.label_words == (" A", " B", " C", " D") and task.kind == "multiple_choice"
    assert task.render("p", four.text).endswith("D. d\nAnswer:")


def test_mmlu_csv(tmp_path):
    path = tmp_path / "astronomy_test.csv"
    path.write_text(
        'What is 2+2?,3,4,5,6,B\n"Largest planet, by mass?",Mars,Venus,Earth,Jupiter,D\n'
    )
    examples = load_mmlu_csv(path)
    assert [ex.label for ex in examples] == [1, 3]
    assert examples[1].text.startswith("Largest planet, by mass?\nA. Mars")
    splits = load_data(f"mmlu:{path}")
    assert len(splits["test"]) == 2 and splits["train"] == []


@needs_shared
def test_loaders_on_shared_files():
    assert len(load_ii_file(SHARED / "ii" / "induce" / "antonyms.json")) == 2592
    cause = load_ii_file(SHARED / "ii" / "execute" / "cause_and_effect.json")
    assert len(cause) == 25 and all(ex.target in ex.text for ex in cause)
    snarks = load_bigbench(SHARED / "bbii" / "snarks" / "task.json")
    assert len(snarks) == 181 and all(ex.label in (0, 1) for ex in snarks)
    counting = load_bigbench(SHARED / "bbii" / "object_counting" / "task.json")
    assert len(counting) == 1000 and counting[0].target == ("three", "3")
    ruin = load_bigbench(SHARED / "bbii" / "ruin_names" / "task.json")
    assert max(ex.text.count("\n") for ex in ruin) == 4  # up to D
    splits = load_data("ii:antonyms", root=SHARED, k=8, seed=1)
    assert len(splits["train"]) == len(splits["dev"]) == 8 and len(splits["test"]) == 100
    assert get_task("taxonomy_animal").metric == "exact_set"


def test_generation_reward_and_cache(tiny_lm):
    model, tokenizer = tiny_lm
    scorer = LocalScorer(model, tokenizer)
    examples = [Example("good", target="bad"), Example("fun", target=("boring", "bad"))]
    ctx = TextContext(
        get_task("antonyms"), {"train": examples, "dev": examples}, scorer, max_new_tokens=4
    )
    calls = []
    generate = scorer._generate  # the uncached model call behind the cached `generate`
    scorer._generate = lambda texts, *a, **k: calls.append(len(texts)) or generate(texts, *a, **k)
    rewards = ctx.rewards(["the opposite", "a movie"], examples)
    assert rewards.shape == (2,) and ((rewards >= 0) & (rewards <= 1)).all()
    assert calls == [4]  # one batched call for all prompt x example texts
    assert ctx.evaluate(["the opposite", "a movie"], "dev").values == rewards.tolist()
    assert calls == [4]  # second time served by the generation cache
    assert ctx.report("a movie", "train")["n"] == 2


def test_registry_kinds():
    assert len(list_tasks("generation")) == 15 and len(list_tasks("multiple_choice")) == 6
    assert set(list_tasks("classification")) < set(list_tasks(None))
    for name in list_tasks(None):
        task = get_task(name)
        assert (task.metric is not None) == (task.kind == "generation")


def test_likelihood_reward_is_the_targets_probability_of_the_first_answer(tiny_lm):
    import torch

    model, tokenizer = tiny_lm
    examples = [Example("good", target="bad"), Example("fun", target=("boring", "bad"))]
    ctx = TextContext(
        get_task("antonyms"),
        {"train": examples, "dev": examples},
        LocalScorer(model, tokenizer),
        generation_reward="likelihood",
    )
    prompts = ["the opposite", "a movie"]
    expected = torch.zeros(2, 2)
    with torch.no_grad():  # a plain forward per (prompt, example): p(" answer\n" | filled template)
        for i, prompt in enumerate(prompts):
            for j, (ex, answer) in enumerate(zip(examples, ["bad", "boring"])):
                context = tokenizer(f"{prompt}\nInput: {ex.text}\nOutput:").input_ids
                target = tokenizer(f" {answer}\n", add_special_tokens=False).input_ids
                logits = model(input_ids=torch.tensor([context + target])).logits[0]
                logprobs = logits.log_softmax(-1)[len(context) - 1 : -1]
                expected[i, j] = logprobs[range(len(target)), target].sum().exp()
    torch.testing.assert_close(ctx.answer_logprobs(prompts, examples).exp(), expected)
    rewards = ctx.rewards(prompts, examples)
    torch.testing.assert_close(rewards, expected.mean(1))
    assert ((rewards > 0) & (rewards < 1)).all()
    ctx.generation_reward = "loglikelihood"  # the mean of the logs, floored
    torch.testing.assert_close(ctx.rewards(prompts, examples), expected.log().mean(1))
    no_answer = ctx.answer_logprobs(prompts, [Example("good", target=())])
    assert no_answer.tolist() == [[ANSWER_LOGPROB_FLOOR], [ANSWER_LOGPROB_FLOOR]]
    hopeless = Example("good", target=" ".join(["bad boring fun movie plot"] * 4))
    floored = ctx.answer_logprobs(prompts, [hopeless])  # 20 words: far below -20 nats unfloored
    assert floored.tolist() == [[ANSWER_LOGPROB_FLOOR], [ANSWER_LOGPROB_FLOOR]]
    # selection on dev stays the task metric of greedy answers
    assert all(a in (0.0, 0.5, 1.0) for a in ctx.evaluate(prompts, "dev").values)


def test_a_user_metric_replaces_a_generation_tasks_metric(tiny_lm):
    model, tokenizer = tiny_lm
    scorer = LocalScorer(model, tokenizer)
    examples = [Example("good", target="bad"), Example("fun", target=("boring", "bad"))]
    splits = {"train": examples, "dev": examples}
    seen = []

    def longer_than_two(prediction: str, example: Example) -> float:
        seen.append(example.target)
        return float(len(prediction.strip()) > 2)

    ctx = TextContext(
        get_task("antonyms"), splits, scorer, max_new_tokens=4, metric_fn=longer_than_two
    )
    result = ctx.evaluate(["the opposite"], "dev")
    texts = [fill_template(ctx.template, "the opposite", ex.text) for ex in examples]
    answers = scorer.generate(texts, 4, stop="\n")
    assert result.name == "longer_than_two" and seen == [ex.target for ex in examples]
    assert result.values == [sum(len(a.strip()) > 2 for a in answers) / 2]
    ctx.metric_fn = lambda prediction, example: 2.0
    with pytest.raises(UserError, match=r"returned 2.0 .* a number in \[0, 1\]"):
        ctx.evaluate(["another prompt"], "dev")
    with pytest.raises(UserError, match="applies to generation tasks; sst-2 is classification"):
        TextContext(get_task("sst-2"), {}, scorer, required=(), metric_fn=longer_than_two)


def test_answer_cap_defaults_to_the_longest_train_or_dev_answer_plus_a_margin(tiny_lm):
    """No --answer-tokens: the longest answer of train and dev (any of an example's accepted
    answers, test never read) in the target's tokens, plus ANSWER_MARGIN."""
    from stableprompt.contexts.text import ANSWER_MARGIN, ANSWER_TOKENS_WITHOUT_TOKENIZER

    model, tokenizer = tiny_lm
    scorer = LocalScorer(model, tokenizer)
    longest = "much colder than the ice of the north"
    splits = {
        "train": [Example("hot", target="cold")],
        "dev": [Example("warm", target=("cool", longest))],
        "test": [Example("x", target="a test answer far longer than every other answer here")],
    }
    ctx = TextContext(get_task("antonyms"), splits, scorer)
    expected = len(tokenizer(" " + longest, add_special_tokens=False).input_ids) + ANSWER_MARGIN
    assert ctx.max_new_tokens == expected > ANSWER_MARGIN + 1
    assert TextContext(get_task("antonyms"), splits, scorer, max_new_tokens=3).max_new_tokens == 3
    scorer.tokenizer = None  # e.g. a remote target without a local tokenizer
    assert TextContext(get_task("antonyms"), splits, scorer).max_new_tokens == (
        ANSWER_TOKENS_WITHOUT_TOKENIZER
    )


def test_answer_tokens_caps_the_targets_answers(tiny_model_dir, tmp_path, monkeypatch):
    """--answer-tokens bounds the greedy decoding behind a generation task's reward and scores."""
    import json

    from stableprompt.config import TrainConfig
    from stableprompt.contexts import build_context

    rows = {str(i): {"input": w, "output": "cold"} for i, w in enumerate(["hot", "up", "in"])}
    for part in ("induce", "execute"):
        (tmp_path / "ii" / part).mkdir(parents=True)
        (tmp_path / "ii" / part / "antonyms.json").write_text(json.dumps({"examples": rows}))
    monkeypatch.setenv("STABLEPROMPT_DATA", str(tmp_path))
    base = dict(task="antonyms", data="ii:antonyms", target=tiny_model_dir, dtype="float32")
    answers = {}
    for cap in (2, 32):
        ctx = build_context(TrainConfig(**base, answer_tokens=cap), required=("test",))
        answers[cap], _ = ctx.answers([("the opposite", ex) for ex in ctx.splits["test"]])
    # the same greedy path, cut two tokens in: a prefix, shorter where the random model rambles
    assert all(long.startswith(short) for short, long in zip(answers[2], answers[32]))
    assert sum(map(len, answers[2])) < sum(map(len, answers[32]))
    with pytest.raises(UserError, match="answer_tokens"):
        TrainConfig.from_dict({**base, "answer_tokens": 0})
