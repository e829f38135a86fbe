"""Prompt transfer: each run's best prompt scored on several targets."""

import json

import pytest
import yaml

from stableprompt.cli import main
from stableprompt.contexts import TextContext, load_task
from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.tasks import load_data
from stableprompt.transfer import format_matrix, read_run, transfer_matrix

from .conftest import tiny_llama

REVIEWS = [
    ("the movie was great fun", 1),
    ("a boring plot and bad acting", 0),
    ("I love it, very good", 1),
    ("it is not good, I hate it", 0),
    ("great film", 1),
    ("terrible movie", 0),
    ("very good acting", 1),
    ("fun plot", 1),
]


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """Label words that are single tokens of the tiny tokenizer, so the random tiny models'
    predictions vary with the prompt (with the demo's words they always say " terrible")."""
    path = tmp_path_factory.mktemp("task") / "yes-no.yaml"
    spec = {"name": "yes-no", "label_words": ["no", "yes"], "template": "{input} {prompt}"}
    path.write_text(yaml.safe_dump({**spec, "manual_prompt": "Good?"}))
    return str(path)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.jsonl"  # a table is read as the test split
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in REVIEWS))
    return str(path)


@pytest.fixture(scope="module")
def second_target(tmp_path_factory, tiny_tokenizer):
    """Another tiny llama with different random weights, so the two columns differ."""
    path = tmp_path_factory.mktemp("tiny-llama-1")
    tiny_llama(len(tiny_tokenizer), seed=1).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def make_run(root, name, prompt, data, task, template=None, best_template=None):
    run = root / name
    run.mkdir()
    config = {"algo": "sql", "task": task, "data": data, "template": template, "seed": 0}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    best = {"best_prompt": prompt, "prompts": [{"prompt": prompt, "dev": 0.5}]}
    if best_template:
        best["template"] = best_template
    (run / "best_prompts.json").write_text(json.dumps(best))
    return str(run)


def direct_accuracy(task, target, data, template, prompt):
    scorer = build_scorer(target, "float32")
    ctx = TextContext(load_task(task), load_data(data), scorer, template, ("test",))
    return ctx.evaluate([prompt], "test").values[0]


def test_matrix_has_one_row_per_run_and_equals_direct_scoring(
    tmp_path, task_file, data_file, tiny_model_dir, second_target
):
    runs = [
        make_run(tmp_path, "plain", "It was", data_file, task_file),
        make_run(tmp_path, "other", "Overall", data_file, task_file),
        make_run(tmp_path, "templated", "So", data_file, task_file, template="{input} {prompt}:"),
        # a template recorded in best_prompts.json wins over the config's
        make_run(
            tmp_path, "recorded", "So", data_file, task_file, "{input} {prompt}", "{prompt} {input}"
        ),
    ]
    targets = [tiny_model_dir, second_target]
    result = transfer_matrix(runs, targets, dtype="float32")
    assert result["task"] == "yes-no" and result["split"] == "test"
    assert result["targets"] == targets
    assert [r["name"] for r in result["runs"]] == ["plain", "other", "templated", "recorded"]
    assert result["runs"][3]["template"] == "{prompt} {input}"
    matrix = result["accuracy"]
    assert len(matrix) == 4 and all(len(row) == 2 for row in matrix)
    assert len({v for row in matrix for v in row}) > 1  # the check below is not vacuous
    for run, row in zip(result["runs"], matrix):
        for target, value in zip(targets, row):
            expected = direct_accuracy(task_file, target, data_file, run["template"], run["prompt"])
            assert value == pytest.approx(expected)
    table = format_matrix(result)
    assert "plain  'It was'" in table and len(table.splitlines()) == 2 + 4


def test_missing_best_prompts_names_the_run_and_the_fix(tmp_path, task_file, data_file):
    run = make_run(tmp_path, "unfinished", "It was", data_file, task_file)
    (tmp_path / "unfinished" / "best_prompts.json").unlink()
    with pytest.raises(UserError, match="unfinished has no best_prompts.json.*--resume"):
        transfer_matrix([run], ["smollm2-135m"])


def test_runs_of_different_tasks_need_task_override(tmp_path, task_file, data_file, tiny_model_dir):
    runs = [
        make_run(tmp_path, "a", "It was", data_file, task_file),
        make_run(tmp_path, "b", "It was", data_file, "demo"),
    ]
    with pytest.raises(UserError, match="different tasks"):
        transfer_matrix(runs, [tiny_model_dir], dtype="float32")
    result = transfer_matrix(runs, [tiny_model_dir], task=task_file, dtype="float32")
    assert result["task"] == "yes-no" and len(result["accuracy"]) == 2


def test_data_override_replaces_the_runs_data(tmp_path, data_file):
    run = make_run(tmp_path, "a", "It was", "somewhere/else", "demo")
    assert read_run(run).data == "somewhere/else"
    assert read_run(run, data=data_file).data == data_file


def test_cli_prints_the_matrix_and_writes_json(
    capsys, tmp_path, task_file, data_file, tiny_model_dir, second_target
):
    runs = [
        make_run(tmp_path, "a", "It was", data_file, task_file),
        make_run(tmp_path, "b", "So", data_file, task_file),
    ]
    out = tmp_path / "matrix.json"
    argv = ["transfer", *runs, "--targets", f"{tiny_model_dir},{second_target}"]
    assert main([*argv, "--dtype", "float32", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written == transfer_matrix(runs, [tiny_model_dir, second_target], dtype="float32")
    assert format_matrix(written) in stdout


def test_cli_missing_best_prompts_is_a_one_line_error(capsys, tmp_path, task_file, data_file):
    run = make_run(tmp_path, "unfinished", "It was", data_file, task_file)
    (tmp_path / "unfinished" / "best_prompts.json").unlink()
    assert main(["transfer", run, "--targets", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err


def test_learned_reads_the_pools_best_where_the_run_kept_the_manual_prompt(tmp_path):
    run = tmp_path / "kept"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "sql", "task": "demo"}))
    learned = {"prompt": "xx yy", "dev": 0.9, "label_words": [" bad", " good"]}
    best = {
        "best_prompt": "It was",
        "best": {"prompt": "It was", "source": "manual"},
        "prompts": [learned],
        "label_words": [" awful", " nice"],
    }
    (run / "best_prompts.json").write_text(json.dumps(best))
    returned, pool = read_run(run), read_run(run, learned=True)
    assert (returned.prompt, returned.label_words) == ("It was", (" awful", " nice"))
    assert (pool.prompt, pool.label_words) == ("xx yy", (" bad", " good"))
