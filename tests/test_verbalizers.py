"""--label-words auto (verbalizer search) and the named presets."""

import pytest
import torch

from stableprompt.algorithms.baselines import FixedPrompts
from stableprompt.cli import format_summary
from stableprompt.config import TrainConfig
from stableprompt.contexts import TextContext
from stableprompt.errors import UserError
from stableprompt.models import LocalScorer
from stableprompt.models.scoring import TargetScorer
from stableprompt.rundir import best_words
from stableprompt.tasks import Example, get_task
from stableprompt.tasks.verbalizers import (
    balanced_accuracy,
    candidates,
    choose_word_set,
    parse_label_words,
    resolve_label_words,
    search_label_words,
    single_token,
)
from stableprompt.trainer import Trainer


class BiasedTarget(TargetScorer):
    """A target whose preferences are known: it says " great" after anything (RLPrompt's words
    then predict one class), while " bad" / " good" follow the input's sentiment."""

    name = "biased"

    def _score_pairs(self, pairs, template, label_words):
        rows = []
        for _, text in pairs:
            positive = "good" in text or "great" in text or "fun" in text
            table = {
                " great": -0.5,
                " terrible": -3.0,
                " good": -1.0 if positive else -4.0,
                " bad": -4.0 if positive else -1.0,
            }
            rows.append([table.get(w, -6.0) for w in label_words])
        return torch.tensor(rows)

    def _generate(self, texts, max_new_tokens, stop):
        raise NotImplementedError


def sentiment_examples() -> list[Example]:
    pos = ["a good film", "great fun", "good acting", "so much fun"]
    neg = ["a dull film", "boring plot", "bad acting", "not worth it"]
    return [Example(t, 1) for t in pos] + [Example(t, 0) for t in neg]


def test_search_picks_the_words_the_target_can_say():
    examples = sentiment_examples()
    groups = [[" terrible", " bad"], [" great", " good"]]
    choice = search_label_words(BiasedTarget(), "It was", "{input} {prompt}", examples, groups)
    assert choice.words == (" bad", " good")
    assert choice.balanced_accuracy == 1.0
    # the task's own words make the biased target answer " great" for everything
    assert choice.default_words == (" terrible", " great")
    assert choice.default_balanced_accuracy == 0.5


def test_search_costs_one_call_per_example():
    scorer = BiasedTarget()
    examples = sentiment_examples()
    search_label_words(
        scorer,
        "It was",
        "{input} {prompt}",
        examples,
        candidates("sst-2", get_task("sst-2").label_words),
    )
    assert scorer.calls == len(examples)


def test_balanced_accuracy_weights_classes_equally():
    labels = torch.tensor([0, 0, 0, 1])
    assert balanced_accuracy(torch.tensor([0, 0, 0, 0]), labels, 2) == 0.5
    assert balanced_accuracy(torch.tensor([0, 0, 1, 1]), labels, 2) == pytest.approx(5 / 6)


def test_coordinate_ascent_finds_the_best_set_when_combinations_are_too_many(monkeypatch):
    import stableprompt.tasks.verbalizers as v

    monkeypatch.setattr(v, "EXHAUSTIVE_LIMIT", 1)
    labels = torch.tensor([0, 1, 2])
    # column c*2+1 is the right word for class c, column c*2 always loses
    logprobs = torch.full((3, 6), -5.0)
    for c in range(3):
        logprobs[c, c * 2 + 1] = -0.1
    idx, bal = choose_word_set(logprobs, labels, [[0, 1], [2, 3], [4, 5]])
    assert idx == (1, 3, 5) and bal == 1.0


def test_split_words_are_dropped_on_a_real_tokenizer(tiny_lm):
    model, tokenizer = tiny_lm
    scorer = LocalScorer(model, tokenizer)
    # in the tiny vocabulary " good", " fun", " terrible", " boring" are single tokens, while
    # " bad", " great" and " wonderful" are spelt with several
    assert single_token(scorer, [" good", " wonderful", " bad", " fun"]) == [" good", " fun"]
    groups = [[" bad", " terrible", " boring"], [" great", " wonderful", " good"]]
    choice = search_label_words(scorer, "it was", "{input} {prompt}", sentiment_examples(), groups)
    assert choice.words[1] == " good" and choice.words[0] in (" terrible", " boring")


def test_resolve_label_words_settings():
    task, splits = get_task("sst-2"), {"train": sentiment_examples(), "dev": []}
    same, record = resolve_label_words(task, "task", BiasedTarget(), task.template, splits)
    assert same is task and record is None
    chosen, record = resolve_label_words(task, "auto", BiasedTarget(), task.template, splits)
    assert chosen.label_words == (" bad", " good") and record["setting"] == "auto"
    assert record["default_balanced_accuracy"] == 0.5
    listed, _ = resolve_label_words(task, "negative, positive", None, task.template, splits)
    assert listed.label_words == (" negative", " positive")
    with pytest.raises(UserError, match="gives 3 words but sst-2 has 2 classes"):
        resolve_label_words(task, "a,b,c", None, task.template, splits)
    with pytest.raises(UserError, match="applies to classification tasks"):
        resolve_label_words(get_task("antonyms"), "a,b", None, "{prompt}{input}", splits)


def test_parse_label_words_spaces_and_errors():
    assert parse_label_words("no,yes", "{input} {prompt}") == (" no", " yes")
    assert parse_label_words("no,yes", "{input} {prompt}: ") == ("no", "yes")
    with pytest.raises(UserError, match="at least two distinct"):
        parse_label_words("yes,yes", "{input} {prompt}")


def test_pin_preset_is_the_published_recipe_and_flags_override_it():
    config = TrainConfig.from_dict({"preset": "pin"})
    assert config.algo == "sparse-sql" and config.loss == "mc" and config.replay
    assert (config.replay_size, config.replay_batch, config.pin_top_k) == (65536, 256, 10000)
    assert config.reward_scale == 1.0 and config.label_words == "task"
    tuned = TrainConfig.from_dict({"preset": "pin", "pin_top_k": 512})
    assert tuned.pin_top_k == 512 and tuned.loss == "mc"
    assert TrainConfig.from_dict({"preset": "rlprompt"}).label_words == "task"
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        TrainConfig.from_dict({"preset": "nope"})


def test_worst_class_reward_pays_nothing_for_answering_one_word():
    from stableprompt.tasks.rewards import rlprompt_reward, worst_class_reward

    labels = torch.tensor([0, 0, 1, 1])
    # prompt 0 answers class 1 for every input with p = 0.9; prompt 1 separates the classes
    one_word = torch.tensor([[0.1, 0.9]] * 4).log()
    separates = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.35, 0.65], [0.2, 0.8]]).log()
    logprobs = torch.stack([one_word, separates])
    rlprompt = rlprompt_reward(logprobs, labels)
    worst = worst_class_reward(logprobs, labels)
    # RLPrompt's reward: (2 x 200 x 0.8 - 2 x 180 x 0.8) / 4 = +8 for the one-word prompt
    assert rlprompt[0].item() == pytest.approx(8.0)
    # worst class: class 0 gets gap -0.8 under the one-word prompt
    assert worst[0].item() == pytest.approx(-80.0)
    # the separating prompt: class 0 gaps 0.4, 0.2 -> 0.3; class 1 gaps 0.3, 0.6 -> 0.45
    assert worst[1].item() == pytest.approx(30.0)
    assert worst[1] > worst[0]


class PromptDependentTarget(TargetScorer):
    """After "It was" only " bad" / " good" carry the sentiment, and only half of it (they key
    on the word "good"); after "Rated:" " awful" / " wonderful" carry all of it."""

    name = "prompt-dependent"

    def _score_pairs(self, pairs, template, label_words):
        rows = []
        for prompt, text in pairs:
            positive = "good" in text or "great" in text or "fun" in text
            if prompt == "Rated:":
                table = {
                    " awful": -4.0 if positive else -1.0,
                    " wonderful": -1.0 if positive else -4.0,
                    " bad": -2.0,
                    " good": -2.0,
                }
            else:
                table = {
                    " bad": -4.0 if "good" in text else -1.0,
                    " good": -1.0 if "good" in text else -4.0,
                }
            rows.append([table.get(w, -6.0) for w in label_words])
        return torch.tensor(rows)

    def _generate(self, texts, max_new_tokens, stop):
        raise NotImplementedError


class TwoPrompts(FixedPrompts):
    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.prompts = ["Rated:", "It was"]


@pytest.mark.parametrize("refit", [True, False])
def test_pool_prompts_get_their_own_label_words(tmp_path, refit):
    """With --label-words auto the run's words are chosen for the manual prompt; at the end each
    pool prompt gets the words chosen for it, the pool is re-ranked by dev with them and each is
    tested with its own words; the calls are counted in the budgeted ones."""
    task, examples = get_task("sst-2"), sentiment_examples()
    splits = {"train": examples, "dev": examples, "test": examples}
    scorer = PromptDependentTarget()
    task, search = resolve_label_words(task, "auto", scorer, task.template, splits)
    assert task.label_words == (" bad", " good")  # best for the manual prompt "It was"
    ctx = TextContext(task, splits, scorer, label_search=search)
    values = {"algo": "manual", "task": "sst-2", "out": str(tmp_path), "pool_size": 2}
    config = TrainConfig.from_dict({**values, "refit_label_words": refit})
    trainer = Trainer(config, ctx, algorithm=TwoPrompts(config, ctx))
    summary = trainer.train()
    best = summary["prompts"][0]
    if refit:
        assert best["prompt"] == "Rated:" and best["label_words"] == [" awful", " wonderful"]
        assert best["dev"] == 1.0 and best["test"] == 1.0
        assert summary["prompts"][1] == {**summary["prompts"][1], "label_words": [" bad", " good"]}
        assert best_words(summary) == [" awful", " wonderful"]
        # search 16 + dev evaluation 2 x 8 + per pool prompt: search 16 and dev 8
        assert summary["target_calls"] == 16 + 16 + 2 * (16 + 8)
    else:
        assert best["prompt"] == "It was" and best["dev"] == 0.75 and "label_words" not in best
        assert best_words(summary) == [" bad", " good"]
        assert summary["target_calls"] == 16 + 16
    spent = summary["target_calls"] + summary["test_calls"]
    assert trainer.projected_calls() + 16 == spent  # the words' search ran before the trainer
    text = format_summary(summary, str(tmp_path))
    assert ("'Rated:' is scored with its own words: awful, wonderful" in text) == refit


def test_fit_label_words_needs_auto():
    task, examples = get_task("sst-2"), sentiment_examples()
    ctx = TextContext(task, {"train": examples, "dev": examples}, PromptDependentTarget())
    assert ctx.fit_label_words("Rated:") == {}  # the task's own words: nothing to re-choose


def test_the_users_manual_prompt_is_the_baseline_and_gets_the_words(tmp_path):
    """--manual-prompt replaces the task's: the words are chosen for it and runs compare with it."""
    from stableprompt.contexts import build_context

    for split in ("train", "dev"):
        rows = [f"{ex.text}\t{ex.label}" for ex in sentiment_examples()]
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    values = {"task": "sst-2", "data": str(tmp_path), "out": str(tmp_path / "run")}
    own = build_context(
        TrainConfig.from_dict({**values, "manual_prompt": "Rated:"}), PromptDependentTarget()
    )
    assert own.task.manual_prompt == "Rated:" and own.label_words == [" awful", " wonderful"]
    task = build_context(TrainConfig.from_dict(values), PromptDependentTarget())
    assert task.task.manual_prompt == "It was" and task.label_words == [" bad", " good"]
