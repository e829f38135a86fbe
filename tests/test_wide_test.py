"""benchmarks/wide_test.py: runs' prompts scored on the train examples they never read."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.tasks.demonstrations import count_pairs, split_for_demonstrations

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import wide_test  # noqa: E402

PAIRS = [(f"the movie {i} is good", f"the movie {i} is not good") for i in range(11)] * 2


@pytest.fixture
def ii_root(tmp_path, monkeypatch):
    """A tiny instruction-induction data root: 11 negation pairs twice to induce (APE's files
    repeat some), 2 to execute."""
    for split, pairs in (("induce", PAIRS), ("execute", PAIRS[:2])):
        path = tmp_path / "ii" / split / "negation.json"
        path.parent.mkdir(parents=True)
        rows = {str(i): {"input": a, "output": b} for i, (a, b) in enumerate(pairs)}
        path.write_text(json.dumps({"examples": rows}))
    monkeypatch.setenv("STABLEPROMPT_DATA", str(tmp_path))
    return tmp_path


def config(target, algo="random", **extra):
    return {"algo": algo, "task": "negation", "data": "ii:negation", "seed": 0, "target": target,
            "dtype": "float32", "answer_tokens": 2, "select_on": "dev", **extra}  # fmt: skip


def make_run(root: Path, name: str, values: dict, prompt: str, template: str) -> str:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(values))
    entry = {"prompt": prompt, "dev": 0.5, "test": 0.25}
    best = {"best_prompt": prompt, "best": entry, "prompts": [entry], "template": template}
    (run / "best_prompts.json").write_text(json.dumps(best))
    return str(run)


def test_a_prompt_is_not_scored_on_the_pairs_it_shows(ii_root, tiny_model_dir):
    ctx, texts = wide_test.held_out_context(config(tiny_model_dir), build_scorer(tiny_model_dir))
    train = len(ctx.splits["train"])
    assert len(texts) == train == 20  # 22 induce pairs, two to dev
    prompt = texts[3] + texts[7]
    scores = wide_test.score_held_out(ctx, texts, list(range(train)), prompt)
    shown = [text in (texts[3], texts[7]) for text in texts]
    assert [s is None for s in scores] == shown and sum(shown) > 2  # a pair's copy is shown too
    assert all(isinstance(s, float) for s, hidden in zip(scores, shown) if not hidden)
    assert len(ctx.splits["train"]) == train  # the sample is put back
    assert count_pairs(prompt, texts) == 2


def test_runs_write_scores_and_compare_on_inputs_neither_shows(ii_root, tiny_model_dir, tmp_path):
    ctx, texts = wide_test.held_out_context(config(tiny_model_dir), build_scorer(tiny_model_dir))
    runs = [
        make_run(tmp_path, "two-s0", config(tiny_model_dir), texts[0] + texts[1], ctx.template),
        make_run(
            tmp_path,
            "one-s0",
            config(tiny_model_dir, generation_reward="metric"),
            texts[2],
            ctx.template,
        ),  # fmt: skip
    ]
    data, saves = {"groups": {}}, []
    wide_test.score_runs(runs, 6, False, data, lambda: saves.append(1))
    (group,) = data["groups"].values()  # one sample for runs that trained on other rewards
    assert set(group["labels"]) == {"manual", "two", "one"} and len(saves) == 3
    assert len(group["sample"]) == 6 and group["prompts"][texts[2]]["test"] == 0.25
    wide_test.score_runs(runs, 6, False, data, lambda: saves.append(1))
    assert len(saves) == 3  # a rerun scores nothing again
    shown = {i for i in group["sample"] if texts[i] in texts[0] + texts[1] + texts[2]}
    both = len(group["sample"]) - len(shown)
    assert f"on {both} inputs" in wide_test.compare(data, "two", "one")


def test_a_run_chosen_on_train_counts_only_the_half_it_never_read(
    ii_root, tiny_model_dir, tmp_path
):
    ctx, texts = wide_test.held_out_context(config(tiny_model_dir), build_scorer(tiny_model_dir))
    rewarded = split_for_demonstrations(ctx.splits["train"])[1]  # what the race chose on
    values = config(tiny_model_dir, select_on="dev+train")
    runs = [
        make_run(tmp_path, "dev-s0", config(tiny_model_dir), texts[0], ctx.template),
        make_run(tmp_path, "train-s0", values, texts[1], ctx.template),
    ]
    data = {"groups": {}}
    wide_test.score_runs(runs, 12, True, data, lambda: None)
    (group,) = data["groups"].values()
    unread = [
        j
        for j, i in enumerate(group["sample"])
        if all(ctx.splits["train"][i] is not ex for ex in rewarded)
    ]
    assert 0 < len(unread) < 12 and group["read_half"] == ["train", "train (1 pairs)"]
    scores = wide_test.label_scores(group, "train")
    assert [j for j, s in enumerate(scores) if s is not None] == [
        j for j in unread if texts[group["sample"][j]] not in texts[1]
    ]
    assert wide_test.label_scores(group, "dev") == group["prompts"][texts[0]]["scores"]
    both = [j for j in unread if texts[group["sample"][j]] not in texts[0] + texts[1]]
    assert f"on {len(both)} inputs" in wide_test.compare(data, "dev", "train")


@pytest.mark.parametrize(
    "values, template, message",
    [
        ({"algo": "sql"}, None, "sql with --select-on dev read train answers"),
        ({"select_on": "dev+train", "demonstrations_from": "all"}, None, "random with --select"),
        ({"algo": "in-context", "select_on": "dev+train"}, None, "in-context with --select-on"),
        ({}, "{prompt}\nInput: {input}\nOutput:", "not the demonstrations form"),
    ],
)
def test_runs_that_read_train_or_are_not_demonstrations_are_refused(
    ii_root, tiny_model_dir, tmp_path, values, template, message
):
    ctx, _ = wide_test.held_out_context(config(tiny_model_dir), build_scorer(tiny_model_dir))
    values = config(tiny_model_dir, **values)
    run = make_run(tmp_path, "run-s0", values, "x", template or ctx.template)
    with pytest.raises(UserError, match=re.escape(message)):
        wide_test.score_runs([run], 4, False, {"groups": {}}, lambda: None)


def test_the_means_keep_targets_apart():
    def group(target: str, held: list[float], test: float) -> tuple[str, dict]:
        key = json.dumps({"task": "t", "seed": 0, "target": target})
        prompts = {"p": {"scores": held, "test": test}}
        return key, {"labels": {"manual": "p"}, "prompts": prompts}

    one = dict([group("small", [1.0, 0.0], 0.5)])
    assert re.search(r"\n  manual +0.500 / 0.500 \(1\)$", wide_test.means({"groups": one}))
    both = dict([group("small", [1.0, 0.0], 0.5), group("large", [0.0, None, 0.0], 0.1)])
    printed = wide_test.means({"groups": both})
    assert "manual on small" in printed and "manual on large" in printed
    assert re.search(r"manual on large +0.000 / 0.100 \(1\)", printed)
