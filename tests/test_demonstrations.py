"""--demonstrations: prompts made of labelled train examples, chosen by the SQL policy."""

import dataclasses
import json

import pytest
import torch

from stableprompt.agents.demo_policy import DemoPolicy
from stableprompt.algorithms.baselines import (
    FixedPrompts,
    random_demonstration_sets,
    random_demonstrations,
)
from stableprompt.algorithms.sql import sql_loss
from stableprompt.cli import format_summary
from stableprompt.config import TrainConfig
from stableprompt.errors import UserError
from stableprompt.tasks import Example, get_task
from stableprompt.tasks.demonstrations import (
    split_for_demonstrations,
    unshown,
    use_demonstrations,
)
from stableprompt.tasks.registry import fill_template
from stableprompt.tasks.rewards import appo_reward, rlprompt_reward, worst_class_reward
from stableprompt.trainer import Trainer
from tests.test_trainer import make_config, make_ctx


def test_split_keeps_the_classes_balanced_and_the_halves_apart():
    train = [Example(f"s{i}", label) for i, label in enumerate([0, 0, 1, 1, 0, 1, 1, 0])]
    shown, rewarded = split_for_demonstrations(train)
    assert [ex.label for ex in shown].count(0) == 2 and [ex.label for ex in shown].count(1) == 2
    assert [ex.label for ex in rewarded].count(0) == 2
    assert {ex.text for ex in shown}.isdisjoint(ex.text for ex in rewarded)
    assert len(shown) + len(rewarded) == len(train)


def test_the_empty_prompt_is_the_manual_prompt_and_demos_precede_the_input(tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    template, manual = ctx.template, ctx.task.manual_prompt
    train = list(ctx.splits["train"])
    texts, classes = use_demonstrations(ctx, 2, balanced=False)
    assert classes is None
    shown, rewarded = split_for_demonstrations(train)
    assert ctx.splits["train"] == rewarded  # only the other half rewards
    for text, ex in zip(texts, shown, strict=True):
        assert text == fill_template(template, manual, ex.text) + ctx.label_words[ex.label] + "\n"
    x = "a new input"
    assert fill_template(ctx.template, "", x) == fill_template(template, manual, x)
    prompt = "".join(texts)
    assert fill_template(ctx.template, prompt, x) == prompt + fill_template(template, manual, x)


def test_bad_demonstration_settings_are_refused(tiny_model_dir):
    with pytest.raises(UserError, match="needs more than 6 train examples"):
        use_demonstrations(make_ctx(tiny_model_dir), 3, balanced=True)  # 2 shown, 2 reward
    with pytest.raises(UserError, match="--demonstrations applies to sql and random"):
        TrainConfig(algo="appo", demonstrations=2)
    with pytest.raises(UserError, match="at most 2 of each .* --no-balanced-demonstrations"):
        ctx = make_ctx(tiny_model_dir)  # shown: 1 negative and 4 positive sentences
        ctx.splits = {**ctx.splits, "train": [Example("bad", 0), Example("dull", 0)]}
        ctx.splits["train"] += [Example(f"good {i}", 1) for i in range(8)]
        use_demonstrations(ctx, 4, balanced=True)  # at most 2 per class: 3 can be shown


def test_generation_demonstrations_are_not_balanced(tiny_model_dir):
    """The default applies to classification; a generation task's examples have no classes."""
    ctx = make_ctx(tiny_model_dir)
    ctx.generation = True
    ctx.splits = {**ctx.splits, "train": [Example(f"w{i}", target=f"a{i}") for i in range(6)]}
    texts, classes = use_demonstrations(ctx, 2, balanced=TrainConfig().balanced_demonstrations)
    assert classes is None and len(texts) == 3 and texts[0].endswith(" a0\n")


def test_balanced_demonstrations_show_one_example_of_each_class(tiny_lm):
    """K = the number of classes: every prompt, sampled or random, shows each class once."""
    lm, tokenizer = tiny_lm
    texts = [f"the movie {w} .\n" for w in ("great", "bad", "fun", "boring", "okay", "dull")]
    classes = [0, 1, 0, 1, 2, 2]
    policy = DemoPolicy(lm, tokenizer, texts, length=3, mlp_hidden=16, classes=classes)
    torch.manual_seed(0)
    rollout = policy.rollout(64, lambda q, base: torch.multinomial(q.softmax(-1), 1)[:, 0])
    assert all(sorted(classes[i] for i in row) == [0, 1, 2] for row in rollout.actions.tolist())
    assert len({tuple(row) for row in rollout.actions.tolist()}) > 10  # still a search
    first = rollout.actions[0].tolist()  # after the first pick its class is closed
    closed = [i for i, c in enumerate(classes) if c == classes[first[0]]]
    assert not policy.mask(rollout)[0, 1, closed].any()
    prompts = random_demonstrations(texts, n=20, counts=[3], seed=0, classes=classes)
    assert prompts == random_demonstrations(texts, n=20, counts=[3], seed=0, classes=classes)
    for prompt in prompts:
        shown = [texts.index(line + "\n") for line in prompt.splitlines()]
        assert sorted(classes[i] for i in shown) == [0, 1, 2]
    # 4 of 3 classes, three candidates of class 0: at most 2 of any class (unmasked, a fifth of
    # the draws would show all three)
    classes = [0, 0, 0, 1, 1, 2]
    policy = DemoPolicy(lm, tokenizer, texts, length=4, mlp_hidden=16, classes=classes)
    rollout = policy.rollout(64, lambda q, base: torch.multinomial(q.softmax(-1), 1)[:, 0])
    assert all([classes[i] for i in row].count(0) <= 2 for row in rollout.actions.tolist())
    for prompt in random_demonstrations(texts, n=64, counts=[4], seed=0, classes=classes):
        assert [classes[texts.index(line + "\n")] for line in prompt.splitlines()].count(0) <= 2


def test_demo_policy_draws_distinct_examples_and_replays_its_states(tiny_lm):
    lm, tokenizer = tiny_lm
    texts = [f"the movie {w} .\n" for w in ("great", "bad", "fun", "boring", "okay")]
    policy = DemoPolicy(lm, tokenizer, texts, length=3, mlp_hidden=16)
    torch.manual_seed(0)
    rollout = policy.rollout(64, lambda q, base: torch.multinomial(q.softmax(-1), 1)[:, 0])
    assert rollout.actions.shape == (64, 3)
    assert all(len(set(row)) == 3 for row in rollout.actions.tolist())  # never shown twice
    replayed = policy.replay(rollout.actions)
    assert torch.equal(replayed.hidden, rollout.hidden)
    assert torch.equal(replayed.base_logits, rollout.base_logits)
    first = rollout.actions[0].tolist()
    assert policy.decode(rollout.actions[:1]) == ["".join(texts[i] for i in first)]
    mask = policy.mask(rollout)  # the second pick may not repeat the first
    assert not mask[0, 1, first[0]] and mask[0, 1].sum() == len(texts) - 1


def test_sql_on_the_demo_policy_learns_which_example_pays(tiny_lm):
    """Reward 1 when candidate 2 is shown first, else 0: SQL moves probability onto it."""
    lm, tokenizer = tiny_lm
    texts = [f"the film {w} .\n" for w in ("great", "bad", "fun", "boring")]
    policy = DemoPolicy(lm, tokenizer, texts, length=2, mlp_hidden=16)
    optimizer = torch.optim.Adam(policy.mlp.parameters(), lr=1e-2)
    torch.manual_seed(0)

    def first_pick_share() -> float:
        rollout = policy.rollout(400, lambda q, b: torch.multinomial(q.softmax(-1), 1)[:, 0])
        return (rollout.actions[:, 0] == 2).float().mean().item()

    before = first_pick_share()
    for _ in range(100):
        rollout = policy.rollout(16, lambda q, b: torch.multinomial(q.softmax(-1), 1)[:, 0])
        rewards = (rollout.actions[:, 0] == 2).float() * 5
        q = policy.q_values(rollout.hidden)
        loss, _ = sql_loss(q, q.detach(), rollout.actions, rewards, mask=policy.mask(rollout))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before < 0.4 and first_pick_share() > 0.6


def test_lr_zero_screens_samples_without_learning(tiny_model_dir, tmp_path):
    """--lr 0, the ablation: every step runs and computes its gradient; the policy never moves."""
    config = make_config(tiny_model_dir, tmp_path, demonstrations=2, lr=0.0, steps=2)
    trainer = Trainer(config, make_ctx(tiny_model_dir), progress=False)
    before = {k: v.clone() for k, v in trainer.algorithm.policy.mlp.state_dict().items()}
    trainer.train()
    after = trainer.algorithm.policy.mlp.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines][1:]
    assert [m["step"] for m in steps] == [1, 2] and all(m["grad_norm"] > 0 for m in steps)


def test_random_demonstrations_follow_the_seed():
    texts = ["a\n", "b\n", "c\n", "d\n"]
    prompts = random_demonstrations(texts, n=5, counts=[2], seed=0)
    assert prompts == random_demonstrations(texts, n=5, counts=[2], seed=0)
    assert all(len(p.split("\n")) == 3 and p.split("\n")[0] != p.split("\n")[1] for p in prompts)


def test_a_demonstrations_run_is_checked_against_the_manual_prompt(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    manual = ctx.task.manual_prompt
    config = make_config(tiny_model_dir, tmp_path, demonstrations=2, pool_size=2)
    summary = Trainer(config, ctx, progress=False).train()
    # the baseline is the empty prompt: the manual prompt with nothing shown before the input
    assert summary["manual"]["prompt"] == ""
    assert summary["manual"]["test"] == ctx.report("", "test")["accuracy"]
    assert ctx.template == "{prompt}" + fill_template(get_task("sst-2").template, manual, "{input}")
    learned = [e["prompt"] for e in summary["prompts"]]
    assert all(p.count(manual) == 2 and p.endswith("\n") for p in learned)
    assert "\nmanual  (none shown)" in format_summary(summary, str(tmp_path))


def test_random_baseline_with_demonstrations(tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(tiny_model_dir, tmp_path, algo="random", demonstrations=2)
    baseline = FixedPrompts(config, ctx)
    assert ctx.template.startswith("{prompt}")
    shown = {line for p in baseline.prompts for line in p.splitlines()}
    train_texts = {ex.text for ex in ctx.splits["train"]}  # the rewarding half is never shown
    assert not any(text in line for line in shown for text in train_texts)


def test_a_default_sql_run_shows_each_class_once(tiny_model_dir, tmp_path):
    """Balanced sets are the default (docs/RESULTS.md says on what evidence)."""
    ctx = make_ctx(tiny_model_dir)  # 6 train: 2 of each class shown, a third of pairs one-sided
    ctx.splits = {**ctx.splits, "train": ctx.splits["test"]}
    config = make_config(tiny_model_dir, tmp_path, demonstrations=2, pool_size=3)
    trainer = Trainer(config, ctx, progress=False)
    summary = trainer.train()
    words = sorted(w.strip() for w in ctx.label_words)
    policy = trainer.algorithm.policy  # the trained policy: 64 fresh samples
    rollout = policy.rollout(64, lambda q, base: torch.multinomial(q.softmax(-1), 1)[:, 0])
    prompts = policy.decode(rollout.actions) + [e["prompt"] for e in summary["prompts"]]
    for prompt in prompts:
        assert sorted(line.rsplit(" ", 1)[-1] for line in prompt.splitlines()) == words


@pytest.mark.parametrize("reward", [rlprompt_reward, worst_class_reward, appo_reward])
def test_a_reward_with_keep_is_the_reward_on_the_kept_examples(reward):
    torch.manual_seed(0)
    logprobs, labels = torch.randn(3, 6, 2).log_softmax(-1), torch.tensor([0, 1, 0, 1, 0, 1])
    keep = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1], [0, 1, 0, 1, 0, 1]], dtype=torch.bool
    )  # the last prompt keeps no example of class 0: its worst class is class 1
    got = reward(logprobs, labels, keep=keep)
    for p in range(3):
        alone = reward(logprobs[p : p + 1, keep[p]], labels[keep[p]])[0]
        torch.testing.assert_close(got[p], alone)
    everything = torch.ones(3, 6, dtype=torch.bool)
    torch.testing.assert_close(reward(logprobs, labels, keep=everything), reward(logprobs, labels))


def test_demonstrations_from_all_train_keeps_train_whole(tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    train = ctx.splits["train"]
    texts, _ = use_demonstrations(ctx, 2, balanced=False, pool="all")
    assert ctx.splits["train"] is train and len(texts) == len(train)  # candidate i is example i
    keep = unshown(torch.tensor([[0, 1], [3, 2]]), [train[2], train[0], train[1]], train)
    assert keep.tolist() == [[True, False, False], [False, True, True]]
    with pytest.raises(UserError, match="needs more than 4 train examples .* has 4"):
        use_demonstrations(make_ctx(tiny_model_dir), 4, balanced=False, pool="all")


def test_sql_from_all_train_is_not_rewarded_on_the_examples_a_prompt_shows(
    tiny_model_dir, tmp_path, monkeypatch
):
    ctx = make_ctx(tiny_model_dir)
    config = make_config(
        tiny_model_dir, tmp_path, demonstrations=2, demonstrations_from="all", steps=2
    )
    seen = []
    rewards = type(ctx).rewards

    def spy(self, prompts, examples, kind="rlprompt", keep=None):
        seen.append((prompts, examples, keep))
        return rewards(self, prompts, examples, kind, keep)

    monkeypatch.setattr(type(ctx), "rewards", spy)
    Trainer(config, ctx, progress=False).train()
    assert len(seen) == 2
    for prompts, examples, keep in seen:
        assert len(examples) == len(ctx.splits["train"]) == 4  # every example rewards
        for prompt, row in zip(prompts, keep.tolist(), strict=True):
            shown = [f"{ex.text} " in prompt for ex in examples]
            assert sum(shown) == 2 and row == [not s for s in shown]
    # random sets draw from the same candidates: every train example
    baseline = FixedPrompts(dataclasses.replace(config, algo="random"), make_ctx(tiny_model_dir))
    shown = {ex.text for ex in ctx.splits["train"] if any(ex.text in p for p in baseline.prompts)}
    assert len(shown) > 2


def test_random_demonstration_sets_are_the_random_baselines_draws():
    """The index sets (what demo_headroom.py scores) are distinct, in range, within the class
    cap, and are exactly the sets the random baseline renders."""
    texts = [f"example {i}\n" for i in range(12)]
    classes = [i % 3 for i in range(12)]
    sets = random_demonstration_sets(len(texts), n=30, k=3, seed=1, classes=classes)
    for picked in sets:
        assert len(set(picked)) == 3 and all(0 <= i < 12 for i in picked)
        assert sorted(classes[i] for i in picked) == [0, 1, 2]  # cap 1: one of each class
    rendered = ["".join(texts[i] for i in picked) for picked in sets]
    assert rendered == random_demonstrations(texts, n=30, counts=[3], seed=1, classes=classes)


def test_random_demonstrations_of_several_counts_share_the_sets_in_turn():
    """Prompt i shows counts[i % 3] pairs, and each count's prompts are the first ones that
    count alone draws (with and without classes)."""
    texts = [f"example {i}\n" for i in range(12)]
    for classes in (None, [i % 3 for i in range(12)]):
        prompts = random_demonstrations(texts, n=8, counts=[3, 6, 1], seed=2, classes=classes)
        assert [p.count("\n") for p in prompts] == [3, 6, 1, 3, 6, 1, 3, 6]
        for j, k in enumerate([3, 6, 1]):
            alone = random_demonstrations(texts, n=8, counts=[k], seed=2, classes=classes)
            assert prompts[j::3] == alone[: len(prompts[j::3])]


def test_random_over_several_counts_is_chosen_on_dev_like_one_count(tiny_model_dir, tmp_path):
    kw = dict(algo="random", demonstrations="1,2", demonstrations_from="all", prompts_per_step=6)
    ctx = make_ctx(tiny_model_dir)
    trainer = Trainer(make_config(tiny_model_dir, tmp_path, **kw), ctx, progress=False)
    prompts = trainer.algorithm.prompts
    train = ctx.splits["train"]
    assert [sum(f"{ex.text} " in p for ex in train) for p in prompts] == [1, 2] * 3
    summary = trainer.train()
    best = max(dict.fromkeys(prompts), key=lambda p: ctx.evaluate([p], "dev").values[0])
    assert summary["best"]["dev"] == pytest.approx(ctx.evaluate([best], "dev").values[0])
    for entry in summary["prompts"]:  # each says how many pairs it shows, and so does the end
        assert entry["pairs"] == sum(f"{ex.text} " in entry["prompt"] for ex in train)
    assert f"learned ({summary['prompts'][0]['pairs']} pairs) " in format_summary(summary, "x")
    with pytest.raises(UserError, match="--demonstrations 4 needs more than 4 train examples"):
        kw["demonstrations"] = "1,4"
        Trainer(make_config(tiny_model_dir, tmp_path / "big", **kw), make_ctx(tiny_model_dir))


def scores_without_shown(ctx, prompt: str) -> torch.Tensor:
    """`prompt` scored on dev, then on the train examples it does not show."""
    unshown_train = [ex for ex in ctx.splits["train"] if f"{ex.text} " not in prompt]
    ctx.splits = {**ctx.splits, "unshown": unshown_train}
    return torch.cat([ctx.example_scores([prompt], s)[0] for s in ("dev", "unshown")])


def test_select_on_dev_and_train_leaves_out_the_train_examples_a_set_shows(
    tiny_model_dir, tmp_path
):
    ctx = make_ctx(tiny_model_dir)
    kw = dict(demonstrations=2, demonstrations_from="all", select_on="dev+train", pool_size=3)
    config = make_config(tiny_model_dir, tmp_path, algo="random", prompts_per_step=3, **kw)
    trainer = Trainer(config, ctx, progress=False)
    summary = trainer.train()
    assert len(summary["prompts"]) >= 2  # 3 draws, distinct ones scored
    prompts = [e["prompt"] for e in summary["prompts"]]
    shown = [[f"{ex.text} " in p for ex in ctx.splits["train"]] for p in prompts]
    left_out = trainer.algorithm.selection_scores(prompts)[:, 4:].isnan()  # after dev's 4
    assert left_out.tolist() == shown and all(sum(row) == 2 for row in shown)
    for entry in summary["prompts"]:  # dev (4) and the 2 of 4 train examples not shown
        want = scores_without_shown(ctx, entry["prompt"])
        assert len(want) == 6 and entry["dev"] == pytest.approx(want.mean().item())
    # the shown examples are scored, then masked
    assert summary["target_calls"] == len(summary["prompts"]) * (4 + 4)
    # sql: the manual prompt (nothing shown) counts all of train, the check the pairs the
    # learned prompt does not show; evaluations are budgeted on dev and train
    ctx = make_ctx(tiny_model_dir)
    trainer = Trainer(make_config(tiny_model_dir, tmp_path / "sql", **kw), ctx, progress=False)
    assert trainer.eval_calls() == trainer.algorithm.prompts_per_eval() * 8
    summary = trainer.train()
    manual = torch.cat([ctx.example_scores([""], s)[0] for s in ("dev", "train")])
    assert summary["manual"]["dev"] == pytest.approx(manual.mean().item())
    best = summary["prompts"][0]
    assert best["dev"] == pytest.approx(scores_without_shown(ctx, best["prompt"]).mean().item())
    # the check pairs the two on dev and the train examples the learned set does not show
    learned = scores_without_shown(ctx, best["prompt"])
    unshown_train = ctx.splits["unshown"]
    manual_pairs = torch.cat([ctx.example_scores([""], s)[0] for s in ("dev", "unshown")])
    wins, losses = int((learned > manual_pairs).sum()), int((learned < manual_pairs).sum())
    check = summary["best"]["check"]
    assert len(unshown_train) == 2 and (check["wins"], check["losses"]) == (wins, losses)
    printed = format_summary(summary, str(tmp_path))
    assert "dev: on dev and the train examples a prompt does not show" in printed
