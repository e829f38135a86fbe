"""The run configuration: one dataclass whose fields are the CLI flags and the YAML keys.

Each field carries its help text, choices and bounds in its metadata, and `parse_config` is the
one parser both front ends use: the CLI hands it the flag strings, YAML hands it the loaded
values, `optimize()` hands it Python values. So `--help`, a YAML file and the Python API accept
and reject the same things with the same one-line errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stableprompt.errors import UserError

ALGOS = ("sql", "sparse-sql", "ppo", "appo", "manual", "random", "in-context", "best-of-n")
# Prompts sampled per step when `prompts_per_step` is left open: RLPrompt's batch for the token
# policies, StablePrompt's for the instruction agent.
DEFAULT_PROMPTS_PER_STEP = {
    "sql": 16,
    "sparse-sql": 16,
    "ppo": 4,
    "appo": 4,
    "best-of-n": 8,
    "random": 1,
}
# Train examples a step scores when `train_examples` is left open: every 16-shot binary set's 32
# (and the demo's), while a large train split (instruction induction: ~1-10k) is sampled, 32 a
# step, instead of scored whole for every prompt. Style transfer scores fewer (RLPrompt's batch).
DEFAULT_TRAIN_EXAMPLES = 32
STYLE_TRAIN_EXAMPLES = 8
# The algorithms whose agent can write a prompt for each input (`--conditioning input`).
CONDITIONED_ALGOS = ("appo", "ppo")
# The algorithms whose agent is the instruction-tuned LM (--add-manual, --agent-temperature).
INSTRUCTION_AGENT_ALGOS = ("appo", "ppo", "best-of-n")
# A token prompt longer than this is no longer a prompt search (and a 100k-token rollout hangs);
# it stays far below the context of every supported agent and target (2k tokens and more).
MAX_PROMPT_LENGTH = 128


def option(default: Any, help: str, **rules: Any) -> Any:
    """A config field: its default, help text and checks (choices, min, max, positive, hint);
    `bare` is the value of the flag given alone (and of YAML `true`: it was once a bool)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


def _per_algo_defaults() -> str:
    return ", ".join(f"{n} for {a}" for a, n in DEFAULT_PROMPTS_PER_STEP.items())


@dataclass
class TrainConfig:
    """Every field is a CLI flag (`--prompt-length 5`) and a YAML key (`prompt_length: 5`)."""

    # what to optimise
    algo: str = option("sql", "method: RL (sql, sparse-sql, ppo, appo) or baseline", choices=ALGOS)
    task: str = option("demo", "registered task name or a task YAML file")
    data: str | None = option(None, "data directory/file/hf:name (default: the demo set)")
    target: str = option("smollm2-135m", "the frozen LM being prompted")
    agent: str = option("smollm2-135m", "the LM the policy is built on")
    template: str | None = option(None, "overrides the task's template")
    manual_prompt: str | None = option(
        None,
        "the prompt you would write (text tasks; default: the task's): every run scores it as "
        "the baseline, and --label-words auto chooses the words for it",
    )
    label_words: str = option(
        "auto",
        "classification label words: auto (the set, among the task's words and a built-in "
        "list, on which the manual prompt scores best on train+dev for this target) | task "
        "(the task's own: RLPrompt's) | a comma-separated list, e.g. negative,positive",
    )
    refit_label_words: bool = option(
        True,
        "with --label-words auto, at the end: re-choose the words for each pool prompt on "
        "train+dev (as for the manual prompt), rank the pool by dev with them and score each "
        "prompt on test with its own words (costs |train|+2|dev| calls per pool prompt; not "
        "with --select-on dev+train, whose words were chosen on train already)",
    )
    preset: str | None = option(
        None,
        "named settings applied under the given ones: rlprompt (RLPrompt's label words and "
        "batch) | pin (PIN's recipe: Monte-Carlo loss, 64k replay, top-k 10,000)",
        choices=("rlprompt", "pin"),
    )
    dtype: str = option(
        "auto", "weights dtype", choices=("auto", "float32", "bfloat16", "float16", "int8")
    )
    seed: int = option(0, "random seed", min=0)
    out: str = option("runs/latest", "run directory")
    log_to: str | None = option(
        None, "also log metrics to (extras)", choices=("tensorboard", "wandb")
    )
    # loop
    steps: int = option(200, "training steps", min=0)
    eval_every: int = option(10, "score on dev every N steps", min=1)
    save_every: int = option(10, "checkpoint every N steps", min=1)
    pool_size: int = option(5, "best prompts kept (by dev) and scored on test", min=1)
    score_manual: bool = option(True, "at the end, score the task's manual prompt too")
    select_on: str = option(
        "dev",
        "the examples that choose prompts (the pool, the returned prompt, the check against "
        "the manual prompt): dev | dev+train: train too, which also rewards training, so a "
        "few-shot split gives twice the examples (a demonstrations prompt is not scored on the "
        "train examples it shows)",
        choices=("dev", "dev+train"),
    )
    halving: int = option(
        0,
        "random: race the drawn prompts on dev (--select-on dev+train: dev and train) by "
        "successive halving: each on this many of those examples, the better half on twice as "
        "many, and so on until the survivors are scored on all, so the same calls try several "
        "times the prompts; 0 scores every prompt on all of them",
        min=0,
    )
    replace_manual_p: float = option(
        0.1,
        "the run returns its best learned prompt instead of the scored manual prompt only if "
        "the learned one beats it on dev in a one-sided paired sign test at p below this "
        "(dev sets are small and the pool's best is the luckiest of many); 1 turns it off",
        min=0.0,
        max=1.0,
    )
    max_target_calls: int | None = option(
        None,
        "budget in (prompt, example) scorings, cache hits included, for training and dev "
        "evaluation (the final test scoring is reported apart); omit for no budget",
        min=1,
        hint="omit --max-target-calls for no budget",
    )
    train_examples: int | None = option(
        None,
        "score each prompt on this many train examples, a fresh random draw each step (default: "
        f"all, at most {DEFAULT_TRAIN_EXAMPLES}; {STYLE_TRAIN_EXAMPLES} for style transfer); pass "
        "the train size to score all",
        min=1,
    )
    generation_reward: str = option(
        "metric",
        "generation tasks' train reward: metric (task metric of greedy answers) | likelihood "
        "(probability of the gold answer) | loglikelihood (its log, floored); dev and test "
        "always use the metric",
        choices=("metric", "likelihood", "loglikelihood"),
    )
    answer_tokens: int | None = option(
        None,
        "generation tasks: longest answer the target writes (greedy, cut at the first newline); "
        "the reward's and evaluation's decoding cost grows with it (default: the longest train "
        "or dev answer in the target's tokens plus 4, so only answers longer than every gold "
        "answer are cut; 32 for a target without a local tokenizer)",
        min=1,
    )
    lr: float = option(
        5e-5,
        "learning rate; 0 never updates the policy (an ablation: its untrained samples, screened "
        "and chosen exactly as a training run's)",
        min=0,
    )
    max_grad_norm: float = option(5.0, "gradient clipping norm", positive=True)
    # token policy (sql, sparse-sql)
    prompt_length: int = option(
        5, "prompt tokens (sql, sparse-sql, random)", min=1, max=MAX_PROMPT_LENGTH
    )
    prompts_per_step: int | None = option(
        None,
        f"prompts sampled per step (default: {_per_algo_defaults()}; random under "
        "--max-target-calls: as many as the budget buys)",
        min=1,
        hint="omit --prompts-per-step for the algorithm's default",
    )
    continue_manual: bool = option(
        False,
        "sql, sparse-sql, random: a prompt is the manual prompt followed by --prompt-length "
        "learned tokens (the policy reads the manual prompt first, so it samples continuations "
        "of it), and the run is checked against the manual prompt alone",
    )
    demonstrations: str = option(
        "0",
        "sql, random: a prompt is this many labelled train examples shown before the input "
        "(the manual prompt stays; the policy chooses which examples and their order, from "
        "the train examples --demonstrations-from names); 0: token prompts. random: several "
        "comma-separated counts (e.g. 5,10,20,40) share its sets equally, all chosen on dev",
    )
    balanced_demonstrations: bool = option(
        True,
        "with --demonstrations on a classification task: show each class at most ceil(K / "
        "classes) times, so K = the number of classes shows one example of each (the order is "
        "still chosen); --no-balanced-demonstrations lets a prompt show any classes",
    )
    demonstrations_from: str = option(
        "half",
        "with --demonstrations: the train examples a prompt may show. half: every other example "
        "of each class, and the other half rewards; all: any, and each prompt is rewarded on the "
        "train examples it does not show (twice the candidates and the rewarding examples)",
        choices=("half", "all"),
    )
    target_shots: int = option(
        0,
        "any algorithm but in-context (which has --num-shots): show the target this many solved "
        "train pairs before every input, each under the prompt, as the in-context baseline "
        "does; drawn once with --seed, and they leave the examples that reward; 0: none",
        min=0,
    )
    top_k: int = option(256, "sampling filter while training (sql)", min=1)
    eval_samples: int = option(
        3,
        "sql, sparse-sql: an evaluation also scores on dev the N best distinct prompts sampled "
        "since the last one (by train reward); 0 scores the greedy prompt alone (RLPrompt)",
        min=0,
    )
    mlp_hidden: int = option(2048, "hidden size of the token policy's MLP", min=1)
    classification_reward: str = option(
        "worst-class",
        "sql/sparse-sql classification reward: worst-class (100 x the mean gap of the class "
        "the prompt serves worst) | rlprompt (RLPrompt's shaped gap)",
        choices=("worst-class", "rlprompt"),
    )
    reward_scale: float = option(5.0, "scale of the z-scored reward (sql)", positive=True)
    target_update_rate: float = option(
        0.001, "Polyak rate of the target network (sql)", min=0.0, max=1.0
    )
    pin_top_k: int = option(
        1024, "sparse-sql: tokens outside the frozen LM's top-k get Q = -inf", min=1
    )
    loss: str = option(
        "sql", "sparse-sql loss: sql (spmax targets) | mc (Monte-Carlo)", choices=("sql", "mc")
    )
    replay: bool = option(False, "also replay stored prompts after each update (sql)")
    replay_size: int = option(2048, "replay buffer size", min=1)
    replay_batch: int = option(16, "replayed prompts per update", min=1)
    # instruction agent (ppo, appo)
    reference: str = option(
        "anchor",
        "KL reference of ppo/appo (--algo ppo runs no anchor, so anchor means initial there)",
        choices=("anchor", "initial", "previous"),
    )
    num_shots: str = option(
        "5",
        "train pairs shown in the agent's meta-prompt; in-context: shown to the target, and "
        "several comma-separated counts (e.g. 5,10,20,40) are each scored on the selection "
        "examples and the best kept (more shots add to fewer: one seeded draw)",
    )
    conditioning: str = option(
        "task",
        "appo, ppo: task (one prompt for the task) | input (StablePrompt's test-time editing: "
        "the meta-prompt also shows an input and the agent writes a prompt for it; a step "
        "samples --prompts-per-step train inputs, one prompt each, rewarded on its input alone, "
        "and evaluation writes a prompt for every dev/test input)",
        choices=("task", "input"),
    )
    add_manual: str = option(
        "no",
        "ppo, appo, best-of-n: yes (the flag alone): the agent's meta-prompt gives the task's "
        "manual prompt as the instruction to improve (with --conditioning input: to rewrite for "
        "the input, StablePrompt's --add_manual), so it writes variants of the prompt you would "
        "write | both: that meta-prompt and the plain one, each evaluation scoring the greedy "
        "prompt of each; they take turns until the first evaluation after step 0, then the one "
        "whose prompts score best on dev takes the steps (best-of-n: in turn), so one run tries "
        "both at one run's budget | no",
        choices=("no", "yes", "both"),
        bare="yes",
    )
    max_new_tokens: int = option(64, "longest prompt the instruction agent writes", min=1)
    agent_temperature: float = option(
        1.0,
        "ppo, appo, best-of-n: the instruction agent's sampling temperature (PPO's ratios and "
        "KL are of the same tempered policy, as in TRL); below 1 a sample stays nearer what "
        "the agent writes greedily",
        positive=True,
    )
    ppo_epochs: int = option(4, "PPO epochs per step", min=1)
    kl_coef: float = option(
        0.3,
        "initial KL penalty coefficient (0.05 until 2026-12-06; 0.3 was chosen on dev, "
        "docs/RESULTS.md, 'The KL coefficient')",
        min=0.0,
    )
    adaptive_kl: bool = option(True, "adapt the KL coefficient towards kl_target")
    kl_target: float = option(6.0, "target KL of the adaptive controller", positive=True)
    kl_horizon: float = option(10000.0, "horizon of the adaptive KL controller", positive=True)
    gamma: float = option(1.0, "PPO discount", min=0.0, max=1.0)
    gae_lambda: float = option(0.95, "GAE lambda", min=0.0, max=1.0)
    clip_range: float = option(0.2, "PPO policy clip range", positive=True)
    clip_range_value: float = option(0.2, "PPO value clip range", positive=True)
    vf_coef: float = option(0.1, "weight of the value loss", min=0.0)
    value_init: str = option(
        "first-batch",
        "ppo/appo: where the value head starts. first-batch: shifted at the first step so the "
        "values average the first batch's mean score; zero: near 0 (TRL's; the default until "
        "2026-12-06), from where a reward far from 0, e.g. -10 nats, takes the clipped value loss "
        "~35 steps to reach while its gradient, shared with the LoRA policy, drives the updates",
        choices=("zero", "first-batch"),
    )
    anchor_every: int = option(5, "appo: compare agent and anchor on dev every N steps", min=1)
    anchor_update_threshold: float = option(0.05, "appo: dev gain that moves the anchor", min=0.0)
    anchor_rollback_threshold: float = option(
        0.1, "appo: dev loss that rolls the agent back", min=0.0
    )
    anchor_on: str = option(
        "metric",
        "appo: compare agent and anchor on the dev metric of their greedy prompts, on the train "
        "reward of those prompts over dev (graded where the metric is 0 for both), or on the "
        "mean train reward of the prompts each sampled while it was the agent (no target calls; "
        "the thresholds are then in reward units)",
        choices=("metric", "reward", "samples"),
    )
    lora_r: int = option(16, "LoRA rank", min=1)
    lora_alpha: int = option(32, "LoRA alpha", min=1)
    lora_dropout: float = option(0.05, "LoRA dropout", min=0.0, max=0.99)
    extra: dict = option({}, "task-specific settings (style transfer: YAML `extra:` keys)")

    def __post_init__(self) -> None:
        """Settings that only make sense together (each field alone is checked by its rules)."""
        for name, f in FIELDS.items():  # TrainConfig(add_manual=True): once a bool, as YAML
            if "bare" in f.metadata and isinstance(getattr(self, name), bool):
                setattr(self, name, parse_value(name, getattr(self, name)))
        self.num_shots = parse_value("num_shots", self.num_shots)  # TrainConfig(num_shots=5)
        self.demonstrations = parse_value("demonstrations", self.demonstrations)
        counts = parse_counts("demonstrations", self.demonstrations)
        if len(counts) > 1 and self.algo != "random":
            raise UserError(
                f"--demonstrations {self.demonstrations}: several counts of pairs share the sets "
                f"of --algo random; {self.algo}'s policy shows one (give one count)"
            )
        if len(counts) > 1 and 0 in counts:
            raise UserError(
                f"--demonstrations {self.demonstrations}: 0 means token prompts, not a count of "
                "pairs (drop the 0)"
            )
        if len(self.shot_counts) > 1 and self.algo != "in-context":
            raise UserError(
                f"--num-shots {self.num_shots}: {self.algo}'s meta-prompt shows one number of "
                "pairs; several counts are for --algo in-context (give one)"
            )
        if self.halving and self.algo != "random":
            raise UserError(
                f"--halving races the prompts --algo random draws; {self.algo} scores its own "
                "on dev (drop --halving)"
            )
        if self.conditioning == "input" and self.algo not in CONDITIONED_ALGOS:
            raise UserError(
                f"--conditioning input needs the instruction agent of --algo appo or ppo; "
                f"{self.algo} learns one prompt for the whole task (pass --algo appo, or drop "
                "--conditioning input)"
            )
        if self.continue_manual and self.algo not in ("sql", "sparse-sql", "random"):
            raise UserError(
                f"--continue-manual applies to the token prompts of sql, sparse-sql and random, "
                f"not {self.algo} (drop --continue-manual)"
            )
        if self.demonstration_counts and (
            self.algo not in ("sql", "random") or self.continue_manual
        ):
            raise UserError(
                f"--demonstrations applies to sql and random without --continue-manual, not "
                f"{self.algo}{' with it' if self.continue_manual else ''} (drop --demonstrations)"
            )
        if self.target_shots and (self.demonstration_counts or self.algo == "in-context"):
            chooser = (
                "--demonstrations chooses them"
                if self.demonstration_counts
                else "in-context shows --num-shots of them"
            )
            raise UserError(
                f"--target-shots adds solved pairs to the template; {chooser} (drop --target-shots)"
            )
        if self.add_manual == "both" and self.conditioning == "input":
            raise UserError(
                "--add-manual both alternates the task meta-prompts; --conditioning input writes "
                "a prompt per input (pass --add-manual yes, or drop --conditioning input)"
            )
        if self.select_on != "dev" and self.conditioning == "input":
            raise UserError(
                "--select-on dev+train scores fixed prompts; --conditioning input writes one "
                "per input, scored on dev (drop --select-on)"
            )
        for flag, used in (
            ("--add-manual", self.add_manual != "no"),
            ("--agent-temperature", self.agent_temperature != 1.0),
        ):
            if used and self.algo not in INSTRUCTION_AGENT_ALGOS:
                raise UserError(
                    f"{flag} applies to the instruction agent of ppo, appo and best-of-n, not "
                    f"{self.algo} (drop {flag})"
                )

    @property
    def shot_counts(self) -> list[int]:
        """`num_shots` as counts: the agent's meta-prompt takes the one, in-context each."""
        return parse_counts("num_shots", self.num_shots)

    @property
    def demonstration_counts(self) -> list[int]:
        """`demonstrations` as counts of pairs, [] for token prompts: sql's policy shows the
        one, random's sets share them."""
        counts = parse_counts("demonstrations", self.demonstrations)
        return [] if counts == [0] else counts

    @property
    def shows_pairs(self) -> bool:
        """Whether the target reads solved train pairs before each input: `--demonstrations`,
        `--target-shots` or `in-context`."""
        return bool(self.demonstration_counts or self.target_shots or self.algo == "in-context")

    @property
    def num_prompts(self) -> int:
        """Prompts per step: `prompts_per_step`, else the algorithm's default."""
        return self.prompts_per_step or DEFAULT_PROMPTS_PER_STEP.get(self.algo, 1)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        return cls.from_dict({**read_yaml_mapping(path), **overrides})

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return parse_config(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    # RLPrompt (Deng et al. 2022): its label words (" terrible"/" great" for SST-2) and reward,
    # the greedy prompt alone evaluated, 16 prompts of 5 tokens on 16 train examples per step;
    # the other settings are already its defaults.
    "rlprompt": {
        "label_words": "task",
        "classification_reward": "rlprompt",
        "eval_samples": 0,
        "prompts_per_step": 16,
        "train_examples": 16,
    },
    # PIN (Choi et al. 2024), as its published commands train: Monte-Carlo loss, replayed from a
    # 64k buffer in batches of 256 (after each on-policy update), fluent top-k 10,000, reward
    # scale 1, RLPrompt's label words and reward.
    "pin": {
        "algo": "sparse-sql",
        "label_words": "task",
        "classification_reward": "rlprompt",
        "loss": "mc",
        "replay": True,
        "replay_size": 65536,
        "replay_batch": 256,
        "pin_top_k": 10000,
        "reward_scale": 1.0,
        "prompts_per_step": 16,
        "train_examples": 16,
    },
}

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
CHOICES: dict[str, tuple[str, ...]] = {
    name: f.metadata["choices"] for name, f in FIELDS.items() if "choices" in f.metadata
}


def parse_counts(key: str, text: str) -> list[int]:
    """'5,10,20' -> [5, 10, 20]: distinct counts >= 0, with a one-line error otherwise."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0 or len(set(counts)) < len(counts):
        raise UserError(
            f"config key {key} must be a count or distinct comma-separated counts, e.g. 5 or "
            f"5,10,20, got {text!r} (fix {flag(key)})"
        )
    return counts


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML config file as a dict, with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (pass --config a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not text (pass a YAML file)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"invalid YAML in {path}{line} (fix the syntax)") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must be a YAML mapping (key: value per line)")
    return raw


def parse_config(values: dict) -> TrainConfig:
    """The one parser: preset, known keys, types (strings converted), choices and bounds."""
    preset = values.get("preset")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (use one of {', '.join(PRESETS)})")
    values = {**PRESETS.get(preset, {}), **values}  # explicit values win over the preset
    unknown = sorted(set(values) - set(FIELDS), key=str)
    if unknown:
        raise UserError(
            f"unknown config key(s) {', '.join(map(str, unknown))} "
            "(see `stableprompt train --help` for the valid names)"
        )
    parsed = {key: parse_value(key, value) for key, value in values.items()}
    extra = dict(parsed.get("extra") or {})
    if "kl_horizon" in extra and "kl_horizon" not in parsed:  # older configs kept it in extra
        parsed["kl_horizon"] = parse_value("kl_horizon", extra.pop("kl_horizon"))
        parsed["extra"] = extra
    return TrainConfig(**parsed)


def parse_value(key: str, value: Any) -> Any:
    """One value converted to its field's type and checked against its choices and bounds."""
    bare = FIELDS[key].metadata.get("bare")
    if bare is not None and isinstance(value, bool):  # a flag that was once a bool: true/false
        value = bare if value else FIELDS[key].default
    value = _convert(key, FIELDS[key].type, value)
    if value is not None:
        _check_rules(key, value, FIELDS[key].metadata)
    return value


def _convert(key: str, type_name: str, value: Any) -> Any:
    """A value checked against the field's annotated type ('int', 'float | None', ...).

    Numbers written as strings are converted: flags arrive as strings, and YAML 1.1 reads
    `lr: 1e-4` as the string '1e-4'.
    """
    kinds = [k.strip() for k in type_name.split("|")]
    if value is None and "None" in kinds:
        return None
    kind = kinds[0]
    if kind in ("int", "float") and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if kind == "float" else int(value)
    if kind in ("float", "str") and isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value) if kind == "float" else str(value)  # `out: 2024` means "2024"
    expected = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}[kind]
    if not isinstance(value, expected) or (kind == "int" and isinstance(value, bool)):
        raise UserError(
            f"config key {key} must be {'a' if kind != 'int' else 'an'} {kind}"
            f"{' or null' if 'None' in kinds else ''}, got {value!r} (fix {flag(key)})"
        )
    return value


def _check_rules(key: str, value: Any, rules: dict) -> None:
    """Choices and numeric bounds; the message names the flag and how to fix it."""
    choices = rules.get("choices")
    if choices and value not in choices:
        raise UserError(f"unknown {key} {value!r} (use one of {', '.join(choices)})")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    fix = rules.get("hint")
    if isinstance(value, float) and not math.isfinite(value):
        problem = "a finite number"
    elif rules.get("positive") and value <= 0:
        problem = "positive"
    elif "min" in rules and value < rules["min"]:
        problem = f"at least {rules['min']}"
    elif "max" in rules and value > rules["max"]:
        problem = f"at most {rules['max']}"
    else:
        return
    fix = fix or f"pass {flag(key)} {_valid_range(rules)}"
    raise UserError(f"{key} must be {problem}, got {value} ({fix})")


def _valid_range(rules: dict) -> str:
    if rules.get("positive"):
        return "a positive number"
    if "max" in rules:
        return f"between {rules['min']} and {rules['max']}"
    return f"{rules['min']} or more"
