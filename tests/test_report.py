"""Reports and comparisons built from a run directory, and the optional experiment loggers."""

import json
import sys

import pytest
import yaml

from stableprompt.cli import main
from stableprompt.errors import UserError
from stableprompt.loggers import NullLogger, make_logger
from stableprompt.report import write_compare, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOP = "Rate it | great or terrible:"  # a pipe, to check the markdown escaping


def fake_run(path, algo="appo", finished=True):
    """A run directory as the Trainer writes it: 10 steps, dev every 3, APPO anchor checks."""
    path.mkdir(parents=True)
    config = {"algo": algo, "task": "sst-2", "target": "smollm2-135m", "agent": "smollm2-135m"}
    (path / "config.yaml").write_text(yaml.safe_dump({**config, "steps": 10, "seed": 0}))
    records = [{"step": 0, "dev_accuracy": 0.5, "dev_prompt": "It was", "calls": 32}]
    events = {4: ("keep", 0.55, 0.5), 6: ("update", 0.62, 0.5), 8: ("rollback", 0.4, 0.62)}
    for step in range(1, 11):
        record = {
            "step": step,
            "reward_mean": 0.1 * step,
            "reward_std": 0.05,
            "prompt": f"prompt {step}",
            "prompts": [f"prompt {step}", "other"],
            "calls": 32 + 64 * step,
            "seconds": 1.5 * step,
        }
        if step % 3 == 0:
            record.update(dev_accuracy=0.5 + 0.02 * step, dev_prompt=TOP)
        if algo == "appo":
            record["kl"] = float(step)  # KL to the reference, nats
        if algo == "appo" and step in events:
            event, agent_dev, anchor_dev = events[step]
            record.update(anchor_event=event, agent_dev=agent_dev, anchor_dev=anchor_dev)
        records.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        prompts = [
            {"prompt": TOP, "dev": 0.68, "step": 9, "test": 0.6125, "test_ci95": [0.55, 0.67]},
            {"prompt": "It was", "dev": 0.5, "step": 0, "test": 0.5, "test_ci95": [0.44, 0.56]},
        ]
        summary = {"best_prompt": TOP, "prompts": prompts, "steps": 10, "target_calls": 800}
        summary |= {"dev_reliability": 0.4, "dev_prompts_scored": 12}
        (path / "best_prompts.json").write_text(json.dumps(summary))
    return path


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_report_has_config_plots_prompts_and_anchor_counts(tmp_path):
    run = fake_run(tmp_path / "appo-run")
    md_path = write_report(run)
    assert md_path == run / "report.md"
    md = md_path.read_text()
    assert "# Report: appo-run" in md and "| appo | sst-2 |" in md
    assert "Ran 10 of 10 steps, 672 target calls, 15.0s" in md
    assert "Rate it \\| great or terrible:" in md  # the pipe is escaped inside the table
    assert "| 1 | ` Rate it \\| great or terrible: ` | 0.680 | 0.613 | [0.550, 0.670] | 9 |" in md
    assert "Anchor checks: 1 update, 1 rollback, 1 keep." in md
    assert "Dev reliability over the 12 prompts scored: 0.40 (split-half" in md
    # rewards 0.1..1.0 over steps 1-10 in blocks of 2; steps are logged 1.5 s apart; KL = step
    assert "| 1-2 | 0.150 | – | 1.5 | 1.5 |" in md and "| 9-10 | 0.950 | – | 1.5 | 9.5 |" in md
    for name in ("reward", "dev", "anchor"):
        assert f"](report/{name}.png)" in md
        assert_png(run / "report" / f"{name}.png")


def test_style_runs_report_the_raw_reward(tmp_path):
    run = fake_run(tmp_path / "tst-run", algo="sparse-sql")
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    for r in records[1:]:  # z-scored per input: ~0; the raw reward is what rises
        r.update(reward_mean=0.0, reward_raw_mean=10.0 * r["step"], reward_raw_max=99.0)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    md = write_report(run).read_text()
    assert "| 1-2 | 15.000 | – | 1.5 |" in md and "| 9-10 | 95.000 | – | 1.5 |" in md
    assert "| steps | mean raw reward |" in md
    assert_png(run / "report" / "reward.png")


def test_report_of_a_stopped_run_says_it_has_no_best_prompts(tmp_path):
    run = fake_run(tmp_path / "sql-run", algo="sql", finished=False)
    md = write_report(run).read_text()
    assert "No best_prompts.json" in md and "--resume" in md
    assert "0.680 | – | – | 9 |" in md  # the best dev prompt of the metrics, no test score
    assert "anchor" not in md.lower() and not (run / "report" / "anchor.png").exists()


def test_compare_overlays_runs(tmp_path):
    a = fake_run(tmp_path / "runs" / "a")
    b = fake_run(tmp_path / "runs" / "b", algo="sql", finished=False)
    md_path = write_compare([a, b], tmp_path / "cmp")
    md = md_path.read_text()
    assert md_path == tmp_path / "cmp" / "compare.md"
    # a finished run counts its last evaluation's calls too (best_prompts.json), a stopped one
    # what its last step logged
    assert (
        "| a | appo | sst-2 | 10 / 10 | 800 |" in md and "| b | sql | sst-2 | 10 / 10 | 672 |" in md
    )
    assert "0.680 | 0.613 | – | – |" in md and "did not finish" in md
    assert "Chosen on dev" not in md  # one finished run: nothing to choose between
    for name in ("reward", "dev"):
        assert f"]({name}.png)" in md
        assert_png(tmp_path / "cmp" / f"{name}.png")


def returning(run, prompt, dev, test, source="learned", **config):
    """Give a finished fake run what the Trainer writes at the end: the prompt it returns and
    the manual prompt's scores; `config` overrides config.yaml entries."""
    summary = json.loads((run / "best_prompts.json").read_text())
    summary["best"] = {"prompt": prompt, "dev": dev, "test": test, "source": source}
    summary["manual"] = {"prompt": "It was", "dev": 0.5, "test": 0.5}
    (run / "best_prompts.json").write_text(json.dumps(summary))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, **config}))
    return run


def test_compare_shows_what_each_run_returns_and_which_dev_picks(tmp_path):
    plain = returning(fake_run(tmp_path / "plain"), "It was", 0.5, 0.5, source="manual")
    edit = returning(fake_run(tmp_path / "edit"), "Rate it:", 0.7, 0.66)
    later = returning(fake_run(tmp_path / "later"), "Rate:", 0.7, 0.9)  # ties go to the first
    md = write_compare([plain, edit, later], tmp_path / "cmp").read_text()
    assert "| plain | appo | sst-2 | 10 / 10 | 800 |" in md
    assert "` It was ` (manual) | 0.500 | 0.500 | 0.500 | 0.500 |" in md
    assert "| ` Rate it: ` | 0.700 | 0.660 | 0.500 | 0.500 |" in md
    pick = "Chosen on dev: edit, ` Rate it: ` (dev 0.700, test 0.660); the manual prompt: dev 0.500"
    assert pick in md
    # data without a test split: the manual prompt has no test score, and the line says so
    summary = json.loads((edit / "best_prompts.json").read_text())
    del summary["manual"]["test"]
    (edit / "best_prompts.json").write_text(json.dumps(summary))
    md = write_compare([plain, edit, later], tmp_path / "cmp").read_text()
    assert "the manual prompt: dev 0.500, test –." in md
    # another seed draws another dev from a pool without one: the scores do not compare
    returning(later, "Rate:", 0.9, 0.9, seed=1)
    md = write_compare([plain, edit, later], tmp_path / "cmp").read_text()
    assert "Chosen on dev" not in md and "dev picks none of them" in md


def test_wall_time_adds_up_resumed_sessions(tmp_path):
    run = fake_run(tmp_path / "run", algo="sql")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    resumed = [json.loads(ln) for ln in lines]
    for r in resumed[6:]:
        r["seconds"] -= 7.5  # the second session started after step 5 (7.5 s)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in resumed))
    assert "15.0s of training" in write_report(run).read_text()


def test_missing_or_empty_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        write_report(tmp_path / "nope")
    with pytest.raises(UserError, match=r"no metrics.jsonl in .*stableprompt train"):
        write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        write_report(tmp_path)


def test_cli_report_and_compare(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert str(run / "report.md") in capsys.readouterr().out
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.md").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_null_logger_and_unknown_kind(tmp_path):
    logger = make_logger(None, tmp_path, {})
    assert isinstance(logger, NullLogger)
    logger.log({"step": 1, "reward_mean": 0.5})
    logger.close()
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="unknown logger 'mlflow'"):
        make_logger("mlflow", tmp_path, {})


def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    logger = make_logger("tensorboard", tmp_path, {"algo": "sql"})
    for step in range(3):
        logger.log({"step": step, "reward_mean": 0.1 * step, "prompt": "x", "prompts": ["x"]})
    logger.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


@pytest.mark.parametrize(
    "kind, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")]
)
def test_missing_logger_package_names_the_extra(tmp_path, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(UserError, match=rf"pip install 'stableprompt\[{kind}\]'"):
        make_logger(kind, tmp_path, {})


def test_dev_plot_has_whole_step_ticks_and_a_chance_line(tmp_path, monkeypatch):
    from stableprompt import report

    run_dir = fake_run(tmp_path / "run", algo="sql")
    best = json.loads((run_dir / "best_prompts.json").read_text())
    best["label_words"] = [" bad", " good", " okay"]
    (run_dir / "best_prompts.json").write_text(json.dumps(best))
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig) or path)
    report.plot_dev(report.load_run(run_dir), tmp_path / "dev.png")
    ax = figures[0].axes[0]
    chance = [line for line in ax.lines if line.get_label() == "chance"]
    assert chance and chance[0].get_ydata()[0] == pytest.approx(1 / 3)
    ax.set_xlim(0, 10)
    ticks = ax.xaxis.get_major_locator().tick_values(0, 10)
    assert all(float(t).is_integer() for t in ticks)
