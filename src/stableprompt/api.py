"""The Python entry point: `stableprompt.optimize(task, data, target=..., algo=..., **config)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.rundir import best_words, check_run_dir
from stableprompt.tasks import Example
from stableprompt.trainer import Trainer


@dataclass
class OptimizeResult:
    """What `optimize` returns: the prompt the run returns (the pool's best by dev, or the manual
    prompt where no learned one beat it on dev: `source`), its scores, and where the run lives."""

    best_prompt: str | None
    source: str | None  # "learned" or "manual"
    prompts: list[dict]  # the pool, best dev first, each with dev (and test) scores
    manual: dict | None  # the task's manual prompt, scored the same way
    label_words: list[str]  # the best prompt's words (its own, where they were re-chosen)
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
    metric: Callable[[str, Example], float] | None = None,
    **config,
) -> OptimizeResult:
    """Train a prompt in one call: `optimize("sst-2", "path/to/16-42", target=..., steps=50)`.

    Keyword arguments are TrainConfig fields (the CLI's flags), checked by the same parser. The
    run directory defaults to runs/<task>-<algo>; an earlier run there is refused unless
    `overwrite`. `metric(prediction, example) -> float in [0, 1]` replaces a generation task's
    metric for training, dev selection and the test scores (classification uses label words);
    it is not saved with the run, so `stableprompt eval` of the run uses the task's metric."""
    out = out or f"runs/{Path(task).stem}-{algo}"
    values = {"task": task, "data": data, "algo": algo, "out": out, **config}
    train_config = TrainConfig.from_dict(values)
    check_run_dir(Path(out), False, overwrite)
    ctx = build_context(train_config, metric=metric)
    summary = Trainer(train_config, ctx, progress=progress).train(overwrite=overwrite)
    return OptimizeResult(
        best_prompt=summary["best_prompt"],
        source=(summary.get("best") or {}).get("source"),
        prompts=summary["prompts"],
        manual=summary.get("manual"),
        label_words=best_words(summary),
        run_dir=Path(out),
        summary=summary,
    )
