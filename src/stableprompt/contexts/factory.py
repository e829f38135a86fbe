"""The one place a task context is built from a config: `train`, `eval`, `transfer` and the
Python API all call `build_context`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from stableprompt.config import TrainConfig
from stableprompt.contexts.base import TaskContext
from stableprompt.contexts.image import build_image_context
from stableprompt.contexts.style import build_style_context
from stableprompt.contexts.text import TextContext
from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.models.scoring import TargetScorer
from stableprompt.tasks import Example, TaskSpec, get_task, load_data, load_task_yaml
from stableprompt.tasks.images import IMAGE_TASK
from stableprompt.tasks.registry import check_template
from stableprompt.tasks.verbalizers import resolve_label_words

DEFAULT_REQUIRED = ("train", "dev")


def load_task(name_or_path: str) -> TaskSpec:
    """A registered task name, or a task YAML file of the user's."""
    if name_or_path.endswith((".yaml", ".yml")):
        return load_task_yaml(name_or_path)
    return get_task(name_or_path)


def build_context(
    config: TrainConfig,
    scorer: TargetScorer | None = None,
    required: tuple[str, ...] = DEFAULT_REQUIRED,
    label_words: tuple[str, ...] | None = None,
    metric: Callable[[str, Example], float] | None = None,
) -> TaskContext:
    """Load the task, its data and the target named in the config (text and style tasks take
    `scorer` instead, to keep one across runs). `required` names the splits that must not be
    empty; `label_words` fixes a classification task's words (else `config.label_words`);
    `metric(prediction, example) -> [0, 1]` replaces a generation task's metric."""
    task = None if config.task == IMAGE_TASK else load_task(config.task)
    if metric is not None and (task is None or task.kind == "style_transfer"):
        raise UserError(
            f"a metric function applies to generation tasks, not to {config.task} (drop metric=)"
        )
    if task is None:
        return build_image_context(config)
    if task.kind == "style_transfer":
        return build_style_context(config, required=required, scorer=scorer)
    splits = load_data(config.data, seed=config.seed)
    scorer = scorer or build_scorer(config.target, config.dtype)
    template = check_template(config.template or task.template)
    if config.manual_prompt is not None:  # the user's own baseline prompt
        task = replace(task, manual_prompt=config.manual_prompt)
    if label_words and task.label_words:
        task, search = replace(task, label_words=tuple(label_words)), None
    else:
        _check_search_budget(config, task, splits)
        task, search = resolve_label_words(task, config.label_words, scorer, template, splits)
    return TextContext(
        task,
        splits,
        scorer,
        template,
        required=required,
        max_new_tokens=config.answer_tokens,
        generation_reward=config.generation_reward,
        label_search=search,
        metric_fn=metric,
    )


def _check_search_budget(config: TrainConfig, task: TaskSpec, splits: dict) -> None:
    """The label-word search scores the manual prompt once per train+dev example: refuse a
    budget it would overrun before spending anything."""
    if config.label_words != "auto" or task.kind != "classification":
        return
    cost = len(splits.get("train") or []) + len(splits.get("dev") or [])
    if config.max_target_calls is not None and cost > config.max_target_calls:
        raise UserError(
            f"choosing label words costs {cost} target calls, more than --max-target-calls "
            f"{config.max_target_calls} (raise the budget, or pass --label-words task)"
        )
