"""The command line: results, files written, and one-line errors with exit code 2."""

import json
from dataclasses import replace

import pytest

from stableprompt.cli import format_summary, main
from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context

from .conftest import SHARED_DATA

SST2 = SHARED_DATA / "fsc" / "16-shot" / "sst-2" / "16-42"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_prints_accuracy_and_writes_json(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "result.json"
    code, stdout, _ = run(
        capsys,
        "eval",
        "--target",
        tiny_model_dir,
        "--split",
        "dev",
        "--prompt",
        "It was",
        "--dtype",
        "float32",
        "--reference-lm",
        tiny_model_dir,
        "--out",
        str(out),
    )
    assert code == 0
    assert "accuracy" in stdout and "95% CI" in stdout and "recall" in stdout
    result = json.loads(out.read_text())
    assert result["perplexity"] > 1 and 0 <= result["english_word_share"] <= 1
    assert result["n"] == 32 and 0 <= result["accuracy"] <= 1
    lo, hi = result["ci95"]
    assert lo <= result["accuracy"] <= hi
    assert len(result["per_class_recall"]) == 2


def test_eval_versus_tests_one_prompt_against_another_on_each_example(
    capsys, tiny_model_dir, tmp_path
):
    """The wins minus the losses of the paired test are the accuracy difference on the split's
    32 examples; a prompt against itself only ties."""
    out = tmp_path / "result.json"
    common = ("eval", "--target", tiny_model_dir, "--split", "dev", "--dtype", "float32")
    common += ("--reference-lm", "none", "--out", str(out))
    code, stdout, _ = run(capsys, *common, "--prompt", "It was", "--versus", "good good good")
    assert code == 0
    result = json.loads(out.read_text())
    versus = result["versus"]
    assert versus["prompt"] == "good good good" and versus["wins"] + versus["losses"] <= 32
    assert versus["wins"] > 0 and versus["losses"] > 0  # the two disagree both ways
    difference = result["accuracy"] - versus["accuracy"]
    assert (versus["wins"] - versus["losses"]) / 32 == pytest.approx(difference)
    assert f"higher on {versus['wins']} examples, lower on {versus['losses']}" in stdout
    code, stdout, _ = run(capsys, *common, "--prompt", "It was", "--versus", "It was")
    versus = json.loads(out.read_text())["versus"]
    assert (versus["wins"], versus["losses"], versus["p"]) == (0, 0, 1.0)


def write_antonyms(tmp_path, monkeypatch, words: list[str]) -> None:
    """An instruction-induction task `ii:antonyms` whose induce and execute parts (train and
    dev, test) both hold `words`, each answered "not <word>" (or "other")."""
    rows = {str(i): {"input": w, "output": [f"not {w}", "other"]} for i, w in enumerate(words)}
    for part in ("induce", "execute"):
        (tmp_path / "ii" / part).mkdir(parents=True)
        (tmp_path / "ii" / part / "antonyms.json").write_text(json.dumps({"examples": rows}))
    monkeypatch.setenv("STABLEPROMPT_DATA", str(tmp_path))


def test_a_generation_run_that_shows_no_pairs_is_told_of_them(
    capsys, tiny_model_dir, tmp_path, monkeypatch
):
    write_antonyms(tmp_path, monkeypatch, ["hot", "up", "in", "big", "old", "wet", "far", "low"])
    common = (
        "train", "--task", "antonyms", "--data", "ii:antonyms", "--target", tiny_model_dir,
        "--dtype", "float32", "--answer-tokens", "2", "--no-progress",
    )  # fmt: skip
    printed = {}
    for algo in ("manual", "in-context"):
        out = tmp_path / algo
        code, printed[algo], _ = run(
            capsys, *common, "--algo", algo, "--num-shots", "1", "--out", str(out)
        )
        assert code == 0
        shows = json.loads((out / "best_prompts.json").read_text())["shows_pairs"]
        assert shows is (algo == "in-context")
    hint = " ".join(printed["manual"].split("the target read no solved pairs")[1].split())
    assert "(--algo in-context --num-shots 5, a few hundred calls)" in hint
    assert "(--algo random --demonstrations 20)" in hint
    assert "solved pairs" not in printed["in-context"]
    summary = json.loads((tmp_path / "manual" / "best_prompts.json").read_text())
    assert "solved pairs" not in format_summary(summary | {"answer_tokens": None}, "x")  # classes


def test_eval_of_a_generation_task_shows_and_writes_each_answer(
    capsys, tiny_model_dir, tmp_path, monkeypatch
):
    """A generation task's eval writes every input's answer beside its gold one and score (the
    scores average to the metric) and prints the first wrong ones."""
    words = ["hot", "up", "in", "big"]
    write_antonyms(tmp_path, monkeypatch, words)
    out = tmp_path / "result.json"
    code, stdout, _ = run(
        capsys, "eval", "--task", "antonyms", "--data", "ii:antonyms", "--target", tiny_model_dir,
        "--dtype", "float32", "--answer-tokens", "3", "--reference-lm", "none", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert [row["input"] for row in result["rows"]] == words  # the test split, in order
    assert [row["gold"] for row in result["rows"]] == [f"not {w}" for w in words]  # the first
    # each row holds its own input's answer: the target asked about each input alone says the
    # same, and the answers differ between inputs, so a shuffled row would show
    config = TrainConfig(task="antonyms", data="ii:antonyms", target=tiny_model_dir)
    ctx = build_context(replace(config, dtype="float32", answer_tokens=3), required=("test",))
    prompt = ctx.task.manual_prompt
    alone = [ctx.answers([(prompt, ex)])[0][0].strip() for ex in ctx.splits["test"]]
    assert [row["prediction"] for row in result["rows"]] == alone and len(set(alone)) > 1
    scores = [row["score"] for row in result["rows"]]
    assert sum(scores) / len(scores) == pytest.approx(result["accuracy"])
    wrong = [row for row in result["rows"] if row["score"] < 1]
    assert wrong, "a random model should not answer antonyms"
    assert f"wrong answers ({len(wrong)} of 4; all answers in --out)" in stdout
    assert f"-> {wrong[0]['prediction'][:30]!r} (gold 'not {wrong[0]['input']}')" in stdout


def test_eval_refuses_versus_with_an_agent(capsys, tmp_path):
    code, _, stderr = run(capsys, "eval", "--agent", str(tmp_path), "--versus", "It was")
    assert code == 2 and "eval takes --prompt (and --versus) or --agent" in stderr


def test_train_from_yaml_with_cli_override(capsys, tiny_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"agent: {tiny_model_dir}\ntarget: {tiny_model_dir}\ndtype: float32\n"
        "steps: 50\nprompt_length: 2\nprompts_per_step: 2\nmlp_hidden: 8\n"
        "train_examples: 4\neval_every: 1\n"
    )
    code, stdout, _ = run(
        capsys,
        "train",
        "--config",
        str(config),
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert code == 0, stdout
    best = json.loads((tmp_path / "run" / "best_prompts.json").read_text())
    assert best["steps"] == 2  # the command line overrode the YAML's 50
    assert "steps: 2" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--data", "/nonexistent/dir"], "data not found: /nonexistent/dir"),
        (["eval", "--task", "no-such-task"], "unknown task"),
        (["eval", "--target", "no-such-model"], "unknown model 'no-such-model'"),
        (["eval", "--answer-tokens", "0"], "answer_tokens"),  # reaches the config's checks
        (["train", "--resume", "/nonexistent/run"], "no run to resume in /nonexistent/run"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_wrong_column_and_bad_labels(capsys, tmp_path, tiny_model_dir):
    bad_column = tmp_path / "data.csv"
    bad_column.write_text("review,label\ngood film,1\n")
    code, _, err = run(capsys, "eval", "--data", str(bad_column), "--target", tiny_model_dir)
    assert code == 2 and "review" in err and err.count("\n") == 1
    bad_label = tmp_path / "labels.csv"
    bad_label.write_text("text,label\ngood film,7\n")
    code, _, err = run(capsys, "eval", "--data", str(bad_label), "--target", tiny_model_dir)
    assert code == 2 and "label 7" in err and "outside 0..1" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    code, _, err = run(capsys, "eval", "--data", str(empty), "--target", tiny_model_dir)
    assert code == 2 and "empty" in err


def test_debug_flag_shows_the_traceback():
    from stableprompt.errors import UserError

    with pytest.raises(UserError):
        main(["--debug", "eval", "--task", "no-such-task"])


def test_train_help_lists_the_choices_of_each_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert "--generation-reward {metric,likelihood,loglikelihood}" in text
    assert "weights dtype; auto | float32 | bfloat16 | float16 | int8 (default: auto)" in text
    # a help that already names every choice does not list them twice
    assert "loglikelihood (its log, floored); dev and test always use the metric (default" in text


def tiny_train(capsys, model_dir: str, out, *flags: str):
    """`stableprompt train` with sparse-sql on a tiny model: a run in seconds."""
    tiny = "--agent {0} --target {0} --dtype float32 --prompt-length 2 --mlp-hidden 8 "
    tiny += "--pin-top-k 20 --pool-size 1 --out {1}"
    argv = ["train", "--algo", "sparse-sql", *tiny.format(model_dir, out).split(), *flags]
    return run(capsys, *argv)


def test_train_ends_with_the_learned_and_manual_prompts(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    flags = ("--steps", "2", "--prompts-per-step", "2", "--no-progress")
    code, stdout, _ = tiny_train(capsys, tiny_model_dir, out, *flags)
    assert code == 0
    best = json.loads((out / "best_prompts.json").read_text())
    lines = stdout.splitlines()
    learned = next(ln for ln in lines if ln.startswith("learned"))
    manual = next(ln for ln in lines if ln.startswith("manual"))
    assert repr(best["prompts"][0]["prompt"])[:20] in learned
    assert f"{best['prompts'][0]['test']:.3f}" in learned
    assert "'It was'" in manual and f"{best['manual']['test']:.3f}" in manual
    assert "test 95% CI" in stdout and "(accuracy)" in stdout
    chance = next(ln for ln in lines if ln.startswith("chance"))
    assert "uniform guess over 2 labels" in chance and chance.endswith("0.500   0.500")
    # the demo task's label words were chosen for the manual prompt and are printed
    assert best["label_word_search"]["setting"] == "auto"
    words = ", ".join(w.strip() for w in best["label_words"])
    assert f"label words: {words} (auto" in stdout
    assert f"{best['target_calls']:,} for training and dev" in stdout
    assert str(out) in stdout


@pytest.mark.parametrize("threshold", ["0", "1"])
def test_the_run_returns_the_manual_prompt_unless_beaten_on_dev(
    capsys, tiny_model_dir, tmp_path, threshold
):
    """--replace-manual-p 0 always keeps the manual prompt, 1 always returns the pool's best; the
    check's counts are recorded and printed either way, and the returned prompt's words too."""
    from stableprompt.rundir import best_words

    out = tmp_path / "run"
    flags = ("--steps", "1", "--no-progress", "--replace-manual-p", threshold)
    code, stdout, _ = tiny_train(capsys, tiny_model_dir, out, *flags)
    assert code == 0
    summary = json.loads((out / "best_prompts.json").read_text())
    best, check = summary["best"], summary["best"]["check"]
    assert check["wins"] + check["losses"] <= 32  # counted on the demo set's 32 dev examples
    if threshold == "0":
        assert best["source"] == "manual" and summary["best_prompt"] == "It was"
        assert best["test"] == summary["manual"]["test"]
        assert f"returned: the manual prompt. The learned one scored higher on {check['wins']}" in (
            stdout
        )
    else:
        assert best["source"] == "learned"
        assert summary["best_prompt"] == summary["prompts"][0]["prompt"]
        assert "returned: the learned prompt" in stdout
    assert best_words(summary) == (best.get("label_words") or summary["label_words"])
    # the same paired test on test, reported whatever is returned: on 1/0 scores the wins minus
    # the losses over the test set are the two prompts' test accuracy difference
    from stableprompt.tasks.data import load_demo

    test_check, n_test = summary["test_check"], len(load_demo()["test"])
    learned, manual = summary["prompts"][0]["test"], summary["manual"]["test"]
    assert test_check["wins"] + test_check["losses"] > 0  # the two prompts disagree somewhere
    assert (test_check["wins"] - test_check["losses"]) / n_test == pytest.approx(learned - manual)
    assert f"on test the learned prompt scored higher on {test_check['wins']} examples" in stdout


def test_version_and_bare_command(capsys):
    from stableprompt import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    code, stdout, _ = run(capsys)
    assert code == 0 and "train" in stdout and "eval" in stdout


def test_test_scoring_shows_progress_on_stderr(capsys, tiny_model_dir, tmp_path):
    code, _, err = tiny_train(capsys, tiny_model_dir, tmp_path / "run", "--steps", "1")
    assert code == 0
    assert "scoring 2 prompt(s) once on" in err  # the pool's one prompt and the manual one
    assert "test 1/2:" in err and "test 2/2:" in err and "'It was'" in err


def test_tasks_table_stays_aligned_for_long_names(capsys):
    main(["tasks"])
    lines = capsys.readouterr().out.splitlines()
    kinds = {line.index(kind) for line in lines for kind in line.split()[1:2]}
    assert len(lines) > 20 and len(kinds) == 1  # every kind starts in the same column
    assert any(line.startswith("yelp-negative-to-positive ") for line in lines)
