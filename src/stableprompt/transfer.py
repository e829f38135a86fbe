"""Prompt transfer (RLPrompt, Deng et al. 2022, section 4): score the best prompt of each training
run on several target LMs, giving a runs x targets matrix of the task metric.

A prompt trained against one target and scored on another shows whether it learnt something
about the task or only about that target's quirks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from stableprompt.errors import UserError
from stableprompt.tasks import TaskSpec


@dataclass(frozen=True)
class RunPrompt:
    """The best prompt of one finished run and what it needs to be scored again."""

    run: str
    prompt: str
    task: str
    data: str | None
    template: str | None
    seed: int
    label_words: tuple[str, ...] | None = None  # the words the run was trained with


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg}); rerun the training") from None


def read_run(run_dir: str | Path, task: str | None = None, data: str | None = None) -> RunPrompt:
    """The run's best prompt and its task, data and template (`task`/`data` override the run's)."""
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
    if not best.get("best_prompt"):
        raise UserError(f"{best_file} holds no best prompt (the run evaluated none; rerun it)")
    config = yaml.safe_load(config_file.read_text()) or {}
    return RunPrompt(
        run=str(run),
        prompt=best["best_prompt"],
        task=task or config.get("task", "demo"),
        data=data or config.get("data"),
        # best_prompts.json may record the template it was scored with; it wins over the config
        template=best.get("template") or config.get("template"),
        seed=int(config.get("seed", 0)),
        label_words=tuple(best["label_words"]) if best.get("label_words") else None,
    )


def _groups(runs: list[RunPrompt]) -> list[tuple[str | None, tuple | None, dict, list[int]]]:
    """(template, label words, data splits, run indices) for runs that share data, template and
    label words, so each group's prompts are scored in one call per target and its data is
    loaded once. A run keeps the label words it was trained with on every target."""
    from stableprompt.tasks import load_data

    members: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        members.setdefault((r.data, r.seed, r.template, r.label_words), []).append(i)
    return [
        (tpl, words, load_data(data, seed=seed), idx)
        for (data, seed, tpl, words), idx in members.items()
    ]


def _score_on_target(
    runs: list[RunPrompt], groups: list, task: TaskSpec, target: str, split: str, dtype: str
) -> list[float]:
    """Each run's prompt scored on one target."""
    from stableprompt.models import build_scorer
    from stableprompt.trainer import TaskContext

    scorer = build_scorer(target, dtype)
    scores = [0.0] * len(runs)
    for template, words, splits, members in groups:
        spec = replace(task, label_words=words) if words and task.label_words else task
        ctx = TaskContext(spec, splits, scorer, template, required=(split,))
        for i, score in zip(members, ctx.accuracy([runs[i].prompt for i in members], split)):
            scores[i] = score
    return scores


def transfer_matrix(
    run_dirs: list[str | Path],
    targets: list[str],
    task: str | None = None,
    data: str | None = None,
    split: str = "test",
    dtype: str = "auto",
) -> dict:
    """Score each run's best prompt on each target. All runs must share one task.

    Returns {"task", "metric", "split", "targets", "runs": [{"run", "name", "prompt", "data",
    "template"}], "accuracy": rows = runs, columns = targets}; "accuracy" is the task metric.
    """
    from stableprompt.trainer import load_task

    if not run_dirs or not targets:
        raise UserError("transfer needs at least one run directory and one target")
    runs = [read_run(d, task, data) for d in run_dirs]
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1:
        raise UserError(
            f"the runs were trained on different tasks ({', '.join(tasks)}); "
            "pass runs of one task, or --task to score them all on one"
        )
    spec, groups = load_task(tasks[0]), _groups(runs)
    columns = [_score_on_target(runs, groups, spec, t, split, dtype) for t in targets]
    return {
        "task": spec.name,
        "metric": spec.metric or "accuracy",
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
