"""Task contexts: what the trainer and the algorithms know about a task (see `base.TaskContext`)."""

from stableprompt.contexts.base import Metric, TaskContext
from stableprompt.contexts.factory import build_context, load_task
from stableprompt.contexts.image import ImageTaskContext
from stableprompt.contexts.style import StyleTransferContext
from stableprompt.contexts.text import ANSWER_LOGPROB_FLOOR, TextContext

__all__ = [
    "ANSWER_LOGPROB_FLOOR",
    "ImageTaskContext",
    "Metric",
    "StyleTransferContext",
    "TaskContext",
    "TextContext",
    "build_context",
    "load_task",
]
