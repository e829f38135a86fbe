"""The trainer every algorithm shares: config, task context, loop, evaluation, checkpoints.

One contract for very different optimisers (TRL-style): a `TrainConfig` whose fields map 1:1 to
CLI flags and YAML keys, and an `Algorithm` that knows how to take one training step and which
prompts to put forward for evaluation. The trainer owns everything else: dev evaluation, the pool
of best prompts, the final test evaluation (test never chooses anything), the target-call budget,
atomic checkpoints and exact resume, metrics.jsonl and the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from stableprompt.errors import UserError
from stableprompt.loggers import make_logger
from stableprompt.models.scoring import TargetScorer
from stableprompt.tasks import Example, TaskSpec, accuracy_report, validate_labels
from stableprompt.tasks.metrics import generation_report, generation_score
from stableprompt.tasks.registry import check_template, fill_template
from stableprompt.tasks.rewards import appo_reward, rlprompt_reward, worst_class_reward
from stableprompt.tasks.verbalizers import resolve_label_words


@dataclass
class TrainConfig:
    """Every field is a CLI flag (`--prompt-length 5`) and a YAML key (`prompt_length: 5`)."""

    # what to optimise
    # sql | sparse-sql | ppo | appo; baselines: manual | random | in-context | best-of-n
    algo: str = "sql"
    task: str = "demo"  # registered task name or a task YAML file
    data: str | None = None  # data directory/file/hf:name; default: the built-in demo set
    target: str = "smollm2-135m"  # the frozen LM being prompted
    agent: str = "smollm2-135m"  # the LM the policy is built on
    template: str | None = None  # overrides the task's template
    # classification label words: auto (the set, among the task's words and a built-in list,
    # on which the manual prompt scores best on train+dev for this target) | task (the task's
    # own: RLPrompt's) | a comma-separated list, e.g. negative,positive
    label_words: str = "auto"
    # named settings applied under the given ones: rlprompt (RLPrompt's label words and batch) |
    # pin (PIN's published recipe: Monte-Carlo loss, 64k replay in batches of 256, top-k 10,000)
    preset: str | None = None
    dtype: str = "auto"
    seed: int = 0
    out: str = "runs/latest"
    log_to: str | None = None  # also log metrics to tensorboard | wandb (extras)
    # loop
    steps: int = 200
    eval_every: int = 10
    save_every: int = 10
    pool_size: int = 5
    score_manual: bool = True  # at the end, score the task's manual prompt on dev and test too
    max_target_calls: int | None = None  # budget in (prompt, example) scorings, cache hits included
    train_examples: int | None = None  # score each prompt on this many train examples (default all)
    # generation tasks' train reward: metric (the task metric of greedy answers) | likelihood (the
    # target's probability of the gold answer: a smooth exact match, for targets that rarely
    # answer right) | loglikelihood (its log, floored: every example counts, not only the easy
    # ones). Dev selection and test always use the metric.
    generation_reward: str = "metric"
    lr: float = 5e-5
    max_grad_norm: float = 5.0
    # token policy (sql, sparse-sql)
    prompt_length: int = 5
    prompts_per_step: int | None = None  # default: 16 for sql/sparse-sql, 4 for ppo/appo
    top_k: int = 256  # sampling filter while training (sql)
    # sql, sparse-sql: an evaluation also scores on dev the N best distinct prompts sampled since
    # the last one (by train reward); 0 scores the greedy prompt alone, as RLPrompt does
    eval_samples: int = 3
    mlp_hidden: int = 2048
    # classification reward of sql/sparse-sql: worst-class (100 x the mean gap of the class the
    # prompt serves worst: a prompt that makes a small target answer one word for every input
    # earns nothing) | rlprompt (RLPrompt's shaped gap, which pays such a prompt ~+10)
    classification_reward: str = "worst-class"
    reward_scale: float = 5.0
    target_update_rate: float = 0.001  # Polyak rate of the target network
    pin_top_k: int = 1024  # sparse-sql: tokens outside the frozen LM's top-k get Q = -inf
    loss: str = "sql"  # sparse-sql: sql (spmax targets) | mc (Monte-Carlo ablation)
    replay: bool = False
    replay_size: int = 2048
    replay_batch: int = 16
    # instruction agent (ppo, appo)
    reference: str = "anchor"  # anchor | initial | previous
    num_shots: int = 5
    max_new_tokens: int = 64
    ppo_epochs: int = 4
    kl_coef: float = 0.05
    adaptive_kl: bool = True
    kl_target: float = 6.0
    anchor_every: int = 5
    anchor_update_threshold: float = 0.05
    anchor_rollback_threshold: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    extra: dict = field(default_factory=dict)  # algorithm-specific knobs not listed above

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path} (pass --config a YAML file)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"invalid YAML in {path}{line} (fix the syntax)") from None
        if not isinstance(raw, dict):
            raise UserError(f"config file {path} must be a YAML mapping (key: value per line)")
        return cls.from_dict({**raw, **overrides})

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        preset = values.get("preset")
        if preset is not None and preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r} (use one of {', '.join(PRESETS)})")
        values = {**PRESETS.get(preset, {}), **values}  # explicit values win over the preset
        unknown = sorted(set(values) - set(fields), key=str)
        if unknown:
            raise UserError(
                f"unknown config key(s) {', '.join(map(str, unknown))} "
                "(see `stableprompt train --help` for the valid names)"
            )
        values = {k: _check_type(k, fields[k].type, v) for k, v in values.items()}
        for key, choices in CHOICES.items():
            if values.get(key) is not None and values[key] not in choices:
                raise UserError(f"unknown {key} {values[key]!r} (use one of {', '.join(choices)})")
        for key in ("eval_every", "save_every"):
            if values.get(key, 1) < 1:
                raise UserError(f"{key} must be at least 1 (got {values[key]})")
        return cls(**values)

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

CHOICES = {
    "algo": ("sql", "sparse-sql", "ppo", "appo", "manual", "random", "in-context", "best-of-n"),
    "loss": ("sql", "mc"),
    "classification_reward": ("rlprompt", "worst-class"),
    "dtype": ("auto", "float32", "bfloat16", "float16", "int8"),
    "log_to": ("tensorboard", "wandb"),
    "reference": ("anchor", "initial", "previous"),
    "generation_reward": ("metric", "likelihood", "loglikelihood"),
}


def _check_type(key: str, type_name: str, value):
    """A YAML value checked against the field's annotated type ('int', 'float | None', ...).

    Numbers written as strings are converted: YAML 1.1 reads `lr: 1e-4` as the string '1e-4'.
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
            f"{' or null' if 'None' in kinds else ''}, got {value!r} (fix its value)"
        )
    return value


# Log-probability floor of an answer: one hopeless example (log p = -60) should not outweigh
# everything else in a mean of log-likelihoods.
ANSWER_LOGPROB_FLOOR = -20.0


class TaskContext:
    """What algorithms need from the task: examples, the target scorer, rewards and evaluation.

    Generation tasks (`task.kind == "generation"`) have no label words: the target answers each
    filled template greedily (`max_new_tokens`, cut at the first newline, batched and cached)
    and the reward/accuracy of a prompt is the task metric's mean over the examples, in [0, 1].
    With `generation_reward="likelihood"` the train reward is instead the mean probability the
    target gives the first gold answer after the filled template (also in [0, 1]); with
    `"loglikelihood"` the mean of its log, floored at ANSWER_LOGPROB_FLOOR.
    """

    def __init__(
        self,
        task: TaskSpec,
        splits: dict[str, list[Example]],
        scorer: TargetScorer,
        template: str | None = None,
        required: tuple[str, ...] = ("train", "dev"),
        max_new_tokens: int = 32,
        generation_reward: str = "metric",
        label_search: dict | None = None,
    ):
        self.generation = task.kind == "generation"
        self.label_search = label_search  # how the label words were chosen (--label-words)
        validate_labels(splits, task.num_classes, required=required, generation=self.generation)
        self.task, self.splits, self.scorer = task, splits, scorer
        self.max_new_tokens = max_new_tokens
        self.generation_reward = generation_reward
        self.template = check_template(template or task.template)
        self.label_words = list(task.label_words)

    def logprobs(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[prompts, examples, classes] label-word log-probs from the target."""
        if self.generation:
            raise UserError(f"task {self.task.name} is a generation task and has no label words")
        return self.scorer.score(
            prompts, [ex.text for ex in examples], self.template, self.label_words
        )

    def generation_scores(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[prompts, examples] metric of the target's answers (one batched generate call)."""
        texts = [fill_template(self.template, p, ex.text) for p in prompts for ex in examples]
        answers = self.scorer.generate(texts, self.max_new_tokens, stop="\n")
        metric = self.task.metric or "exact_match"
        targets = [ex.target for _ in prompts for ex in examples]
        scores = [generation_score(a, t, metric) for a, t in zip(answers, targets, strict=True)]
        return torch.tensor(scores, dtype=torch.float32).view(len(prompts), len(examples))

    def answer_logprobs(self, prompts: list[str], examples: list[Example]) -> torch.Tensor:
        """[prompts, examples] log-probability that the target writes each example's first gold
        answer and then ends the line, as greedy generation is cut (teacher-forced: one scoring
        pass per example, no decoding), floored at ANSWER_LOGPROB_FLOOR; an example without an
        answer gets the floor."""
        space = "" if self.template[-1:].isspace() else " "
        columns = []
        for ex in examples:
            answers = [ex.target] if isinstance(ex.target, str) else list(ex.target or [])
            if not answers:
                columns.append(torch.full((len(prompts),), ANSWER_LOGPROB_FLOOR))
                continue
            line = space + answers[0].strip() + "\n"
            logprobs = self.scorer.score(prompts, [ex.text], self.template, [line])
            columns.append(logprobs[:, 0, 0].clamp(min=ANSWER_LOGPROB_FLOOR))
        # checked after scoring: a remote server reveals its mode on the first query
        if getattr(self.scorer, "approximate", False):
            raise UserError(
                f"target {self.scorer.name} gives only approximate label scores, so it cannot "
                "score answer likelihoods (use --generation-reward metric)"
            )
        return torch.stack(columns, dim=1)

    def rewards(
        self, prompts: list[str], examples: list[Example], kind: str = "rlprompt"
    ) -> torch.Tensor:
        """Raw (unnormalised) reward per prompt: RLPrompt's shaped gap, or StablePrompt's; for
        generation tasks the metric's mean, the answer likelihood or its log (whatever `kind`)."""
        if self.generation and self.generation_reward == "likelihood":
            return self.answer_logprobs(prompts, examples).exp().mean(-1)
        if self.generation and self.generation_reward == "loglikelihood":
            return self.answer_logprobs(prompts, examples).mean(-1)
        if self.generation:
            return self.generation_scores(prompts, examples).mean(-1)
        labels = torch.tensor([ex.label for ex in examples])
        logprobs = self.logprobs(prompts, examples)
        if kind == "rlprompt":
            return rlprompt_reward(logprobs, labels)
        if kind == "worst-class":
            return worst_class_reward(logprobs, labels)
        if kind == "appo":
            return appo_reward(logprobs, labels)
        raise ValueError(f"unknown reward kind {kind!r}")

    def accuracy(self, prompts: list[str], split: str) -> list[float]:
        """The task metric of each prompt on a whole split."""
        examples = self.splits[split]
        if self.generation:
            return self.generation_scores(prompts, examples).mean(-1).tolist()
        predictions = self.logprobs(prompts, examples).argmax(-1)
        labels = torch.tensor([ex.label for ex in examples])
        return (predictions == labels).float().mean(-1).tolist()

    def report(self, prompt: str, split: str) -> dict:
        examples = self.splits[split]
        if self.generation:
            return generation_report(self.generation_scores([prompt], examples)[0].tolist())
        predictions = self.logprobs([prompt], examples)[0].argmax(-1).tolist()
        return accuracy_report(predictions, [ex.label for ex in examples], self.task.num_classes)


class Algorithm(ABC):
    """One RL method. The trainer calls `train_step` once per step and `eval_prompts` to evaluate.

    Checkpoints hold `tensors()` (safetensors: weights, target networks, anchors) and `state()`
    (optimizer, buffers, counters: anything `torch.save` writes and `weights_only=True` reads).
    A step's metrics may carry `dev_scores` ({prompt: dev score}) for prompts the algorithm
    scored on dev itself; the trainer pools them and does not log them.
    """

    trainable = True  # False: fixed-prompt baselines, scored at step 0 and never stepped

    def __init__(self, config: TrainConfig, ctx: TaskContext):
        self.config, self.ctx = config, ctx

    def train_examples(self) -> list[Example]:
        """The train examples a step scores: all, or a fresh random `train_examples` of them."""
        train = self.ctx.splits["train"]
        n = self.config.train_examples
        return train if not n or n >= len(train) else random.sample(train, n)

    @abstractmethod
    def train_step(self, step: int) -> dict:
        """One update. Returns metrics: at least reward_mean, reward_std and a sample `prompt`."""

    @abstractmethod
    def eval_prompts(self) -> list[str]:
        """Prompts to score on dev now (the greedy prompt for token policies)."""

    def prompts_per_eval(self) -> int:
        """How many prompts an evaluation scores at most (for the budget projection)."""
        return len(self.eval_prompts())

    @abstractmethod
    def calls_per_step(self) -> int:
        """Target scorings one `train_step` requests (for the budget projection)."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    @abstractmethod
    def state(self) -> dict: ...

    @abstractmethod
    def load_state(self, state: dict) -> None: ...


def build_algorithm(config: TrainConfig, ctx: TaskContext) -> Algorithm:
    """Imported lazily so `stableprompt eval` never pays for the training stack."""
    if config.algo == "sql":
        from stableprompt.algorithms.sql import SoftQLearning

        return SoftQLearning(config, ctx)
    if config.algo == "sparse-sql":
        from stableprompt.algorithms.sparse_sql import SparseSoftQLearning

        return SparseSoftQLearning(config, ctx)
    if config.algo in ("ppo", "appo"):
        from stableprompt.algorithms.ppo import AdaptivePPO

        return AdaptivePPO(config, ctx)
    if config.algo in ("manual", "random", "in-context"):
        from stableprompt.algorithms.baselines import FixedPrompts

        return FixedPrompts(config, ctx)
    if config.algo == "best-of-n":
        from stableprompt.algorithms.baselines import BestOfN

        return BestOfN(config, ctx)
    raise UserError(f"unknown algorithm {config.algo!r} (use {', '.join(CHOICES['algo'])})")


class PromptPool:
    """The best distinct prompts by dev score, highest first."""

    def __init__(self, size: int, entries: list[dict] | None = None):
        self.size = size
        self.entries: list[dict] = entries or []

    def add(self, prompt: str, dev: float, step: int) -> None:
        if any(e["prompt"] == prompt for e in self.entries):
            return
        self.entries.append({"prompt": prompt, "dev": dev, "step": step})
        # ties keep the earlier prompt: sort is stable and we sort by score only
        self.entries.sort(key=lambda e: -e["dev"])
        del self.entries[self.size :]


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a blank or half-written line (a killed run) sorts last,
    so truncation drops it."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file a normal file's mode
    os.replace(tmp, path)


def _rng_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Trainer:
    """Runs an algorithm on a task; writes config.yaml, metrics.jsonl, best_prompts.json and
    checkpoints/ into `config.out`."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: TaskContext,
        algorithm: Algorithm | None = None,
        progress: bool = True,
    ):
        self.config, self.ctx = config, ctx
        self.out = Path(config.out)
        self.progress = progress
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.algorithm = algorithm or build_algorithm(config, ctx)
        self.pool = PromptPool(config.pool_size)
        self.step = 0
        self.queries_before = 0  # target scorings of earlier (pre-resume) sessions
        self.stop = _StopFlag()  # set by Ctrl-C while train() runs
        self.logger = make_logger(None, self.out, {})  # train() opens the configured one

    # -- budget ------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        return self.config.steps if self.algorithm.trainable else 0

    def projected_calls(self) -> int:
        c = self.config
        steps = self.steps
        # step 0, every eval_every steps, and the last step if it is not a multiple
        n_evals = 1 + steps // c.eval_every + (steps % c.eval_every != 0)
        dev, test = len(self.ctx.splits["dev"]), len(self.ctx.splits.get("test") or [])
        per_eval = self.algorithm.prompts_per_eval() * dev if n_evals else 0
        manual = dev + test if self._scores_manual() else 0
        final = c.pool_size * test + manual
        return steps * self.algorithm.calls_per_step() + n_evals * per_eval + final

    def calls_used(self) -> int:
        return self.queries_before + self.ctx.scorer.queries

    # -- checkpoints -------------------------------------------------------------------------

    def save(self) -> Path:
        """Write checkpoints/step-N atomically, then point checkpoints/latest at it."""
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        for orphan in root.glob(".partial-*"):  # left by a run killed while saving
            shutil.rmtree(orphan, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.algorithm.tensors().items()},
            tmp / "weights.safetensors",
        )
        torch.save({"algorithm": self.algorithm.state(), "rng": _rng_state()}, tmp / "state.pt")
        meta = {"step": self.step, "pool": self.pool.entries, "calls_used": self.calls_used()}
        (tmp / "trainer.json").write_text(json.dumps(meta))
        final = root / f"step-{self.step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_write_text(root / "latest", final.name)
        for old in root.glob("step-*"):  # keep only the newest checkpoint
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, run_dir: Path) -> None:
        pointer = run_dir / "checkpoints" / "latest"
        if not pointer.is_file():
            raise UserError(f"no checkpoint in {run_dir} (start a new run without --resume)")
        name = pointer.read_text().strip()
        if not re.fullmatch(r"step-\d+", name):  # never follow a pointer out of the run
            raise UserError(f"{pointer} names {name!r}, not a checkpoint (start a new run)")
        ckpt = run_dir / "checkpoints" / name
        if not (ckpt / "state.pt").is_file():
            raise UserError(f"checkpoint {ckpt} is missing or incomplete (start a new run)")
        self.algorithm.load_tensors(load_file(ckpt / "weights.safetensors"))
        state = torch.load(ckpt / "state.pt", weights_only=True)
        self.algorithm.load_state(state["algorithm"])
        _set_rng_state(state["rng"])
        meta = json.loads((ckpt / "trainer.json").read_text())
        self.step = meta["step"]
        self.pool = PromptPool(self.config.pool_size, meta["pool"])
        self.queries_before = meta["calls_used"] - self.ctx.scorer.queries
        self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after the checkpoint: the resumed run logs those steps again."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= step]
            _atomic_write_text(path, "".join(ln + "\n" for ln in lines))

    # -- loop --------------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.logger.log(record)

    def evaluate(self) -> dict:
        prompts = list(dict.fromkeys(self.algorithm.eval_prompts()))
        if not prompts:  # e.g. best-of-n before its first draw
            return {}
        scores = self.ctx.accuracy(prompts, "dev")
        for prompt, score in zip(prompts, scores):
            self.pool.add(prompt, score, self.step)
        best = max(range(len(prompts)), key=scores.__getitem__)
        return {"dev_accuracy": scores[best], "dev_prompt": prompts[best]}

    def train(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train for config.steps (or until the budget runs out), then score the pool on test.

        The run directory is locked while it runs; a fresh run refuses a directory that already
        holds a run unless `overwrite` (which deletes that run's files first). Ctrl-C finishes
        the current step, saves a checkpoint and raises `Interrupted`."""
        c = self.config
        check_run_dir(self.out, resume, overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        with RunLock(self.out):
            if resume:
                self.load(self.out)
            else:
                for name in RUN_FILES:
                    path = self.out / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            config_text = yaml.safe_dump(c.to_dict(), sort_keys=False)
            _atomic_write_text(self.out / "config.yaml", config_text)
            self.logger = make_logger(c.log_to, self.out, c.to_dict())
            try:
                with _stop_on_sigint() as stop:
                    self.stop = stop
                    return self._train_loop()
            finally:
                self.logger.close()

    def _train_loop(self) -> dict:
        c = self.config
        projected = self.projected_calls()
        print(
            f"projected target calls: {projected:,} ({self.steps} steps x "
            f"{self.algorithm.calls_per_step()} per step, plus dev/test evaluation)"
            + (f"; budget {c.max_target_calls:,}" if c.max_target_calls else "")
        )
        if self.step == 0:
            self.log({"step": 0, **self.evaluate(), "calls": self.calls_used()})
        bar = _progress(self.steps, self.step, self.progress)
        last_dev = None  # the progress bar shows the latest dev score between evaluations
        started, calls_at_start = time.time(), self.calls_used()
        while self.step < self.steps:
            # Stop before a step that would overrun the budget (cache hits count as calls too).
            next_calls = self.calls_used() + self.algorithm.calls_per_step()
            if c.max_target_calls and next_calls > c.max_target_calls:
                print(f"budget of {c.max_target_calls:,} target calls reached at step {self.step}")
                break
            metrics = self.algorithm.train_step(self.step)
            raw = getattr(self.ctx, "raw_rewards", None)  # style transfer: before z-scoring
            if raw is not None:
                metrics |= {
                    "reward_raw_mean": raw.mean().item(),
                    "reward_raw_max": raw.max().item(),
                }
                self.ctx.raw_rewards = None
            for prompt, score in metrics.pop("dev_scores", {}).items():
                self.pool.add(prompt, score, self.step + 1)
            self.step += 1
            record = {
                "step": self.step,
                **metrics,
                "calls": self.calls_used(),
                "seconds": round(time.time() - started, 2),
            }
            if self.step % c.eval_every == 0 or self.step == self.steps:
                record.update(self.evaluate())
            self.log(record)
            rate = (self.calls_used() - calls_at_start) / max(time.time() - started, 1e-9)
            last_dev = record.get("dev_accuracy", last_dev)
            bar.set_postfix(
                reward=f"{metrics['reward_mean']:.2f}",
                dev="-" if last_dev is None else f"{last_dev:.3f}",
                calls_s=f"{rate:.0f}",
                prompt=metrics.get("prompt", "")[:40],
            )
            bar.update(1)
            if self.step % c.save_every == 0 or self.step == self.steps:
                self.save()
            if self.stop.requested:
                bar.close()
                self.save()
                raise Interrupted(self.step, self.out)
        bar.close()
        self.save()
        return self.finish()

    def _scores_manual(self) -> bool:
        return bool(
            self.ctx.task.manual_prompt and self.algorithm.trainable and self.config.score_manual
        )

    def _manual_baseline(self, scored) -> dict | None:
        """The task's hand-written prompt scored like the pool (dev, then test), so every run
        ends with the comparison a user wants; skipped for baselines, which are themselves one."""
        if not self._scores_manual():
            return None
        prompt = self.ctx.task.manual_prompt
        return scored({"prompt": prompt, "dev": self.ctx.accuracy([prompt], "dev")[0]})

    def finish(self) -> dict:
        """Score the pool on test once; the best prompt is the one with the best dev score."""
        calls_before_test = self.calls_used()
        test = self.ctx.splits.get("test") or []
        todo = len(self.pool.entries) + self._scores_manual()
        done = [0]
        if test and self.progress:
            print(f"scoring {todo} prompt(s) once on {len(test):,} test inputs", file=sys.stderr)

        def scored(entry: dict) -> dict:
            result = dict(entry)
            if test:
                done[0] += 1
                started = time.time()
                report = self.ctx.report(entry["prompt"], "test")
                result.update(test=report["accuracy"], test_ci95=list(report["ci95"]))
                if self.progress:  # a long silence otherwise: test sets hold thousands of inputs
                    print(
                        f"test {done[0]}/{todo}: {report['accuracy']:.3f} on {len(test):,} "
                        f"inputs in {time.time() - started:.0f} s  {entry['prompt'][:50]!r}",
                        file=sys.stderr,
                    )
            return result

        results = [scored(entry) for entry in self.pool.entries]
        summary = {
            "algo": self.config.algo,
            "template": self.ctx.template,  # in-context baselines change it
            "label_words": list(self.ctx.task.label_words),
            "label_word_search": self.ctx.label_search,
            "best_prompt": results[0]["prompt"] if results else None,
            "prompts": results,
            "manual": self._manual_baseline(scored),
            "steps": self.step,
            "target_calls": calls_before_test,  # training and dev evaluation: the budgeted calls
            "test_calls": self.calls_used() - calls_before_test,
        }
        _atomic_write_text(self.out / "best_prompts.json", json.dumps(summary, indent=2))
        return summary


# What a run directory holds; a fresh run refuses a directory with any of them (see --overwrite).
RUN_FILES = ("config.yaml", "metrics.jsonl", "best_prompts.json", "checkpoints")


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over an earlier one (its files would mix with the new run's)."""
    if resume or overwrite or not out.is_dir():
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise UserError(
            f"{out} already holds a run ({', '.join(found)}): pass --overwrite to replace it, "
            f"--resume {out} to continue it, or another --out"
        )


class RunLock:
    """An exclusive lock on RUN_DIR/.lock for the life of a run: a second writer gets a one-line
    error naming the holder's pid. The OS drops the lock when the holder dies (kill -9 too)."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"

    def __enter__(self) -> RunLock:
        import fcntl

        self.file = self.path.open("a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise UserError(
                f"run directory {self.path.parent} is in use by process {holder} "
                "(wait for it to finish, stop it, or pass another --out)"
            ) from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # releases the lock


class Interrupted(Exception):
    """Ctrl-C during training: the step in progress finished and a checkpoint was saved."""

    def __init__(self, step: int, out: Path):
        super().__init__(f"stopped at step {step}")
        self.step, self.out = step, out


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_sigint():
    """The first Ctrl-C asks the loop to stop after the current step; a second one aborts."""
    import signal
    import threading

    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print(
            "\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc="train")


def load_task(name_or_path: str) -> TaskSpec:
    """A registered task name, or a task YAML file of the user's."""
    from stableprompt.tasks import get_task, load_task_yaml

    if name_or_path.endswith((".yaml", ".yml")):
        return load_task_yaml(name_or_path)
    return get_task(name_or_path)


def build_context(config: TrainConfig, scorer: TargetScorer | None = None) -> TaskContext:
    """Load the task, its data and the target named in the config, and choose its label words.
    Text tasks take `scorer` instead of loading the target (to keep one across runs)."""
    from stableprompt.models import build_scorer
    from stableprompt.tasks import load_data

    if config.task == "textual-inversion":
        from stableprompt.tasks.images import build_image_context

        return build_image_context(config)
    task = load_task(config.task)
    if task.kind == "style_transfer":
        from stableprompt.style_transfer import build_style_context

        return build_style_context(config)
    splits = load_data(config.data, seed=config.seed)
    scorer = scorer or build_scorer(config.target, config.dtype)
    template = check_template(config.template or task.template)
    task, label_search = resolve_label_words(task, config.label_words, scorer, template, splits)
    return TaskContext(
        task,
        splits,
        scorer,
        template,
        generation_reward=config.generation_reward,
        label_search=label_search,
    )


@dataclass
class OptimizeResult:
    """What `optimize` returns: the best prompt (by dev), its scores, and where the run lives."""

    best_prompt: str | None
    prompts: list[dict]  # the pool, best dev first, each with dev (and test) scores
    manual: dict | None  # the task's manual prompt, scored the same way
    label_words: list[str]
    run_dir: Path
    summary: dict  # everything best_prompts.json holds


def optimize(
    task: str = "demo",
    data: str | None = None,
    *,
    algo: str = "sparse-sql",
    out: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **config,
) -> OptimizeResult:
    """Train a prompt in one call: `optimize("sst-2", "path/to/16-42", target=..., steps=50)`.

    Keyword arguments are TrainConfig fields (the CLI's flags), checked as YAML values are. The
    run directory defaults to runs/<task>-<algo>; an earlier run there is refused unless
    `overwrite`."""
    out = out or f"runs/{Path(task).stem}-{algo}"
    values = {"task": task, "data": data, "algo": algo, "out": out, **config}
    train_config = TrainConfig.from_dict(values)
    check_run_dir(Path(out), False, overwrite)
    ctx = build_context(train_config)
    summary = Trainer(train_config, ctx, progress=progress).train(overwrite=overwrite)
    return OptimizeResult(
        best_prompt=summary["best_prompt"],
        prompts=summary["prompts"],
        manual=summary.get("manual"),
        label_words=summary.get("label_words", []),
        run_dir=Path(out),
        summary=summary,
    )
