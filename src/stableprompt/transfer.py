"""Prompt transfer (RLPrompt, Deng et al. 2022, section 4): score the best prompt of each training
run on several target LMs, giving a runs x targets matrix of the task metric.

A prompt trained against one target and scored on another shows whether it learnt something
about the task or only about that target's quirks. Each run is scored through the same context
factory as training (`contexts.build_context`, from the run's own config.yaml), so text, style
transfer and image runs all transfer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stableprompt.config import TrainConfig, read_yaml_mapping
from stableprompt.contexts import build_context
from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.rundir import best_words


@dataclass(frozen=True)
class RunPrompt:
    """The best prompt of one finished run and what it needs to be scored again."""

    run: str
    prompt: str
    task: str
    data: str | None
    template: str | None
    seed: int
    label_words: tuple[str, ...] | None = None  # the words the run scored its best prompt with
    config: tuple[tuple[str, object], ...] = ()  # the rest of the run's config.yaml


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg}); rerun the training") from None


def read_run(
    run_dir: str | Path, task: str | None = None, data: str | None = None, learned: bool = False
) -> RunPrompt:
    """The prompt the run returned (or, with `learned`, its pool's best learned prompt, also
    where the run kept the manual one) and its task, data and template (`task`/`data` override
    the run's)."""
    run = Path(run_dir)
    best_file, config_file = run / "best_prompts.json", run / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run} is not a training run (no config.yaml); pass a `train --out` dir")
    if not best_file.is_file():
        raise UserError(
            f"{run} has no best_prompts.json: the run has not finished "
            f"(finish it with `stableprompt train --resume {run}`)"
        )
    best = _read_json(best_file)
    if best.get("conditioning") == "input":
        raise UserError(
            f"{run} wrote a prompt per input (--conditioning input), it has no one prompt to "
            f"transfer (score its agent with `stableprompt eval --agent {run}`)"
        )
    if not best.get("best_prompt"):
        raise UserError(f"{best_file} holds no best prompt (the run evaluated none; rerun it)")
    config = read_yaml_mapping(config_file)
    if learned:  # as if the run had returned its pool's best
        best = best | {"best_prompt": best["prompts"][0]["prompt"], "best": best["prompts"][0]}
    return RunPrompt(
        run=str(run),
        prompt=best["best_prompt"],
        task=task or config.get("task", "demo"),
        data=data or config.get("data"),
        # best_prompts.json may record the template it was scored with; it wins over the config
        template=best.get("template") or config.get("template"),
        seed=int(config.get("seed", 0)),
        label_words=tuple(best_words(best)) or None,  # the best prompt's own words, if chosen
        config=tuple(sorted((k, v) for k, v in config.items() if k in SETTINGS)),
    )


# What a run's config contributes besides task, data, template and seed: how the task context
# is built (style transfer reads `extra`, generation tasks their reward and answer length).
SETTINGS = ("extra", "generation_reward", "answer_tokens")


def _groups(runs: list[RunPrompt]) -> dict[tuple, list[int]]:
    """Runs that share data, seed, template, label words and settings, by index: each group's
    prompts are scored in one call per target. A run keeps its label words on every target."""
    members: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        key = (r.data, r.seed, r.template, r.label_words, json.dumps(r.config, sort_keys=True))
        members.setdefault(key, []).append(i)
    return members


def _score_on_target(
    runs: list[RunPrompt], groups: dict, target: str, split: str, dtype: str
) -> tuple[list[float], str, str]:
    """Each run's prompt scored on one target, the metric's name and the task's."""
    scorer, scores, metric, task = None, [0.0] * len(runs), "accuracy", runs[0].task
    for members in groups.values():
        run = runs[members[0]]
        config = TrainConfig.from_dict(
            {
                **dict(run.config),
                "task": run.task,
                "data": run.data,
                "template": run.template,
                "seed": run.seed,
                "target": target,
                "dtype": dtype,
                "label_words": "task",  # the run's words (below) or the task's own
            }
        )
        if scorer is None and config.task != "textual-inversion":  # one target load per column
            scorer = build_scorer(target, dtype)
        ctx = build_context(config, scorer, required=(split,), label_words=run.label_words)
        result = ctx.evaluate([runs[i].prompt for i in members], split)
        metric, task = result.name, ctx.task.name
        for i, score in zip(members, result.values):
            scores[i] = score
    return scores, metric, task


def transfer_matrix(
    run_dirs: list[str | Path],
    targets: list[str],
    task: str | None = None,
    data: str | None = None,
    split: str = "test",
    dtype: str = "auto",
    learned: bool = False,
) -> dict:
    """Score each run's returned prompt (`learned`: its pool's best) on each target. All runs
    must share one task.

    Returns {"task", "metric", "split", "targets", "runs": [{"run", "name", "prompt", "data",
    "template"}], "accuracy": rows = runs, columns = targets}; "accuracy" is the task metric.
    """
    if not run_dirs or not targets:
        raise UserError("transfer needs at least one run directory and one target")
    runs = [read_run(d, task, data, learned) for d in run_dirs]
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1:
        raise UserError(
            f"the runs were trained on different tasks ({', '.join(tasks)}); "
            "pass runs of one task, or --task to score them all on one"
        )
    groups = _groups(runs)
    scored = [_score_on_target(runs, groups, t, split, dtype) for t in targets]
    columns = [scores for scores, _, _ in scored]
    return {
        "task": scored[0][2],
        "metric": scored[0][1],
        "split": split,
        "targets": list(targets),
        "runs": [
            {
                "run": r.run,
                "name": Path(r.run).name,
                "prompt": r.prompt,
                "data": r.data,
                "template": r.template,
            }
            for r in runs
        ],
        "accuracy": [[col[i] for col in columns] for i in range(len(runs))],
    }


def format_matrix(result: dict) -> str:
    """A plain-text table: one row per run (name and prompt), one column per target."""
    labels = [f"{r['name']}  {r['prompt']!r}" for r in result["runs"]]
    width = max(len(s) for s in [*labels, "run  prompt"])
    cols = [max(len(t), 6) for t in result["targets"]]
    head = "  ".join(t.rjust(w) for t, w in zip(result["targets"], cols))
    lines = [
        f"task {result['task']}  split {result['split']}  {result['metric']} per target",
        f"{'run  prompt'.ljust(width)}  {head}",
    ]
    for label, row in zip(labels, result["accuracy"]):
        lines.append(
            f"{label.ljust(width)}  " + "  ".join(f"{v:.4f}".rjust(w) for v, w in zip(row, cols))
        )
    return "\n".join(lines)
