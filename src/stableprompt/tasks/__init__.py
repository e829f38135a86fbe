"""Tasks: data loading, the task registry, metrics and rewards."""

from stableprompt.tasks.data import (
    Example,
    Splits,
    load_data,
    load_demo,
    load_hf,
    load_kshot_dir,
    load_table,
    validate_labels,
)
from stableprompt.tasks.metrics import accuracy_report, wilson_interval
from stableprompt.tasks.registry import (
    DEFAULT_TEMPLATE,
    TaskSpec,
    get_task,
    list_tasks,
    load_task_yaml,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "Example",
    "Splits",
    "TaskSpec",
    "accuracy_report",
    "get_task",
    "list_tasks",
    "load_data",
    "load_demo",
    "load_hf",
    "load_kshot_dir",
    "load_table",
    "load_task_yaml",
    "validate_labels",
    "wilson_interval",
]
