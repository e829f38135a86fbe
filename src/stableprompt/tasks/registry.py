"""Task registry: label words, template and a manual baseline prompt for each task.

A template holds `{input}` and `{prompt}`; the scorer appends a label word right after the filled
template and reads its log-probability, so label words carry their leading space (" great") and
the label word is the NEXT token after the template, RLPrompt-style. The input comes first so the
scorer can cache its key/values and only re-run the (short) prompt for each candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stableprompt.errors import UserError

DEFAULT_TEMPLATE = "{input} {prompt}"
_PLACEHOLDER = re.compile(r"\{(prompt|input)\}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    label_words: tuple[str, ...]
    template: str
    manual_prompt: str
    kind: str = "classification"
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    def render(self, prompt: str, text: str) -> str:
        return fill_template(self.template, prompt, text)


def fill_template(template: str, prompt: str, text: str) -> str:
    """Fill `{prompt}` and `{input}` in one pass, so braces inside the input or prompt stay
    literal (a prompt that says "{input}" is not replaced by the input)."""
    return _PLACEHOLDER.sub(lambda m: prompt if m[1] == "prompt" else text, template)


def _words(*words: str) -> tuple[str, ...]:
    return tuple(" " + w for w in words)


_SENTIMENT2 = _words("terrible", "great")
_SENTIMENT5 = _words("terrible", "bad", "okay", "good", "great")

_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            "sst-2",
            _SENTIMENT2,
            DEFAULT_TEMPLATE,
            "It was",
            description="SST-2 binary movie-review sentiment",
        ),
        TaskSpec(
            "sst-5",
            _SENTIMENT5,
            DEFAULT_TEMPLATE,
            "It was",
            description="SST-5 five-way movie-review sentiment",
        ),
        TaskSpec(
            "mr",
            _SENTIMENT2,
            DEFAULT_TEMPLATE,
            "It was",
            description="MR binary movie-review sentiment",
        ),
        TaskSpec(
            "cr",
            _SENTIMENT2,
            DEFAULT_TEMPLATE,
            "It was",
            description="CR binary customer-review sentiment",
        ),
        TaskSpec(
            "yelp-2",
            _SENTIMENT2,
            DEFAULT_TEMPLATE,
            "It was",
            description="Yelp polarity restaurant-review sentiment",
        ),
        TaskSpec(
            "yelp-5",
            _SENTIMENT5,
            DEFAULT_TEMPLATE,
            "It was",
            description="Yelp five-way review rating",
        ),
        TaskSpec(
            "agnews",
            _words("World", "Sports", "Business", "Tech"),
            "{input} {prompt} Topic:",
            "Classify the news article by topic.",
            description="AG News four-way news topic",
        ),
        TaskSpec(
            "subj",
            _words("subjective", "objective"),
            DEFAULT_TEMPLATE,
            "This sentence is",
            description="Subjective vs objective sentences",
        ),
        TaskSpec(
            "trec",
            _words("Description", "Entity", "Expression", "Human", "Location", "Number"),
            "{input} {prompt} Answer type:",
            "What kind of answer does this question ask for?",
            description="TREC six-way question type",
        ),
        TaskSpec(
            "yahoo",
            _words(
                "culture",
                "science",
                "health",
                "education",
                "computer",
                "sports",
                "business",
                "music",
                "family",
                "politics",
            ),
            "{input} {prompt} Topic:",
            "Classify the question by topic.",
            description="Yahoo Answers ten-way topic",
        ),
        TaskSpec(
            "dbpedia",
            _words(
                "Company",
                "Education",
                "Artist",
                "Sports",
                "Office",
                "Transportation",
                "Building",
                "Natural",
                "Village",
                "Animal",
                "Plant",
                "Album",
                "Film",
                "Written",
            ),
            "{input} {prompt} Category:",
            "Classify the Wikipedia article by category.",
            description="DBpedia fourteen-way entity category",
        ),
        TaskSpec(
            "demo",
            _SENTIMENT2,
            DEFAULT_TEMPLATE,
            "It was",
            description="Built-in demo: binary movie-review sentiment (sst-2 labels)",
        ),
    ]
}


def list_tasks() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in _TASKS:
        raise UserError(
            f"unknown task {name!r} (known tasks: {', '.join(_TASKS)}; or pass a task YAML file)"
        )
    return _TASKS[name]


def load_task_yaml(path: str | Path) -> TaskSpec:
    """Load a custom task from YAML with fields name, label_words, template, manual_prompt
    (optional: description). A label word without leading whitespace gets one space prepended
    when the template does not end in whitespace, since YAML drops unquoted leading spaces.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file not found: {path} (pass --task a task name or a YAML file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"invalid YAML in {path}{line} (fix the syntax)") from None
    if not isinstance(data, dict):
        raise UserError(
            f"task file {path} must be a YAML mapping "
            "(with name, label_words, template, manual_prompt)"
        )
    missing = [k for k in ("name", "label_words", "template") if k not in data]
    if missing:
        raise UserError(
            f"task file {path} is missing {', '.join(missing)} "
            "(add them: name, label_words, template, manual_prompt)"
        )
    template = data["template"]
    if not isinstance(template, str) or not all(p in template for p in ("{prompt}", "{input}")):
        raise UserError(
            f"template in {path} must contain both {{prompt}} and {{input}} (got {template!r})"
        )
    words = data["label_words"]
    if not isinstance(words, list) or len(words) < 2 or not all(isinstance(w, str) for w in words):
        raise UserError(
            f"label_words in {path} must be a list of at least 2 strings "
            "(e.g. [' terrible', ' great'])"
        )
    if any(not w.strip() for w in words) or len(set(words)) != len(words):
        raise UserError(f"label_words in {path} must be distinct and non-empty (got {words})")
    if not template[-1:].isspace():
        words = [w if w[:1].isspace() else " " + w for w in words]
    return TaskSpec(
        name=str(data["name"]),
        label_words=tuple(words),
        template=template,
        manual_prompt=str(data.get("manual_prompt") or ""),
        kind=str(data.get("kind", "classification")),
        description=str(data.get("description", "")),
    )
