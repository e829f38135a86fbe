"""The config: one parser for flags, YAML and Python; every bad number is a one-line error."""

import dataclasses

import pytest

from stableprompt.cli import main
from stableprompt.config import (
    DEFAULT_PROMPTS_PER_STEP,
    FIELDS,
    MAX_PROMPT_LENGTH,
    TrainConfig,
)
from stableprompt.errors import UserError

BAD_FLAGS = [
    (["--steps", "-3"], "steps must be at least 0, got -3 (pass --steps 0 or more)"),
    (["--steps", "many"], "steps must be an int, got 'many' (fix --steps)"),
    (["--prompts-per-step", "0"], "prompts_per_step must be at least 1, got 0 (omit"),
    (["--max-target-calls", "0"], "max_target_calls must be at least 1, got 0 (omit"),
    (["--max-target-calls", "-5"], "max_target_calls must be at least 1, got -5"),
    (["--pool-size", "0"], "pool_size must be at least 1, got 0 (pass --pool-size 1 or more)"),
    (
        ["--prompt-length", "100000"],
        f"prompt_length must be at most {MAX_PROMPT_LENGTH}, got 100000 "
        f"(pass --prompt-length between 1 and {MAX_PROMPT_LENGTH})",
    ),
    (["--prompt-length", "0"], "prompt_length must be at least 1"),
    (["--lr", "nan"], "lr must be a finite number, got nan (pass --lr 0 or more)"),
    (["--lr", "inf"], "lr must be a finite number"),
    (["--lr", "-0.5"], "lr must be at least 0, got -0.5 (pass --lr 0 or more)"),
    (["--eval-every", "0"], "eval_every must be at least 1"),
    (["--save-every", "-1"], "save_every must be at least 1"),
    (["--seed", "-1"], "seed must be at least 0"),
    (["--train-examples", "0"], "train_examples must be at least 1"),
    (["--top-k", "0"], "top_k must be at least 1"),
    (["--eval-samples", "-1"], "eval_samples must be at least 0"),
    (["--kl-coef", "-0.1"], "kl_coef must be at least 0.0"),
    (["--lora-dropout", "1.5"], "lora_dropout must be at most 0.99"),
    (["--target-update-rate", "2"], "target_update_rate must be at most 1.0"),
    (["--anchor-every", "0"], "anchor_every must be at least 1"),
    (["--algo", "dqn"], "unknown algo 'dqn' (use one of sql, sparse-sql"),
    (
        ["--num-shots", "-1"],
        "num_shots must be a count or distinct comma-separated counts, e.g. 5 or 5,10,20, got "
        "'-1' (fix --num-shots)",
    ),
    (["--num-shots", "5,x"], "num_shots must be a count or distinct comma-separated counts"),
    (["--num-shots", "5,10,5"], "num_shots must be a count or distinct comma-separated counts"),
    (
        ["--num-shots", "5,10", "--algo", "appo"],
        "--num-shots 5,10: appo's meta-prompt shows one number of pairs; several counts are for "
        "--algo in-context (give one)",
    ),
    (
        ["--demonstrations", "5,10", "--algo", "sql"],
        "--demonstrations 5,10: several counts of pairs share the sets of --algo random; sql's "
        "policy shows one (give one count)",
    ),
    (
        ["--demonstrations", "0,5", "--algo", "random"],
        "--demonstrations 0,5: 0 means token prompts, not a count of pairs (drop the 0)",
    ),
    (["--demonstrations", "-2"], "demonstrations must be a count or distinct comma-separated"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_naming_the_flag_and_exit_2(capsys, tmp_path, flags, message):
    code = main(["train", *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no usage dump
    assert message in err
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


@pytest.mark.parametrize("flags, message", BAD_FLAGS[:6])
def test_yaml_and_python_get_the_same_errors(tmp_path, flags, message):
    key, value = flags[0][2:].replace("-", "_"), flags[1]
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: {value}\n")
    with pytest.raises(UserError) as from_yaml:
        TrainConfig.from_yaml(path)
    with pytest.raises(UserError) as from_dict:
        TrainConfig.from_dict({key: value})
    assert message in str(from_yaml.value) and str(from_yaml.value) == str(from_dict.value)


def test_omitted_budget_means_unlimited_and_per_algo_batch_defaults_are_visible():
    config = TrainConfig.from_dict({"algo": "ppo"})
    assert config.max_target_calls is None and config.num_prompts == 4
    assert TrainConfig.from_dict({"algo": "sql"}).num_prompts == DEFAULT_PROMPTS_PER_STEP["sql"]
    assert TrainConfig.from_dict({"algo": "sql", "prompts_per_step": "3"}).num_prompts == 3


def test_flags_parse_through_the_config_parser():
    config = TrainConfig.from_dict({"lr": "1e-4", "steps": "20", "replay": True, "out": 2024})
    assert (config.lr, config.steps, config.replay, config.out) == (1e-4, 20, True, "2024")


@pytest.mark.parametrize(
    ("flags", "value"),
    [([], "no"), (["--add-manual"], "yes"), (["--add-manual", "both"], "both")],
)
def test_add_manual_is_a_flag_or_a_choice_and_old_yaml_booleans_still_load(flags, value):
    """`--add-manual` alone means yes (it was a bool flag); YAML true/false read as yes/no."""
    from stableprompt.cli import build_parser

    args = build_parser().parse_args(["train", "--algo", "ppo", *flags])
    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    assert TrainConfig.from_dict(overrides).add_manual == value
    assert TrainConfig.from_dict({"algo": "ppo", "add_manual": value != "no"}).add_manual == (
        "no" if value == "no" else "yes"
    )
    assert TrainConfig(algo="ppo", add_manual=True).add_manual == "yes"


def test_old_configs_with_kl_horizon_in_extra_still_load():
    config = TrainConfig.from_dict({"extra": {"kl_horizon": 500, "num_samples": 2}})
    assert config.kl_horizon == 500.0 and config.extra == {"num_samples": 2}


def test_every_flag_has_help_from_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (at hyphens too)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        assert f.metadata["help"], f.name
        assert "--" + f.name.replace("_", "-") in text
        assert "".join(f.metadata["help"].split()) in text, f.name
    assert set(FIELDS) == {f.name for f in dataclasses.fields(TrainConfig)}
