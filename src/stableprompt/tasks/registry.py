"""Task registry: label words, template and a manual baseline prompt for each task.

A template holds `{input}` and `{prompt}`; the scorer appends a label word right after the filled
template and reads its log-probability, so label words carry their leading space (" great") and
the label word is the NEXT token after the template, RLPrompt-style. The input comes first so the
scorer can cache its key/values and only re-run the (short) prompt for each candidate.

Kinds: "classification"; "multiple_choice" (options listed as lettered lines in the input,
label words " A", " B", ... after "Answer:", scored exactly like classification; a question with
fewer options than the task's letters just lists fewer); "generation" (instruction induction and
free-text BIG-Bench: the target answers greedily, cut at the first newline, and `metric` from
`stableprompt.tasks.metrics.METRICS` scores the answer against the example's target);
"style_transfer" (the target rewrites the input, sampled, cut at the closing quote; scored for
content, style and fluency by `stableprompt.style_transfer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stableprompt.errors import UserError
from stableprompt.tasks.data import letter_words, read_text

DEFAULT_TEMPLATE = "{input} {prompt}"
_PLACEHOLDER = re.compile(r"\{(prompt|input)\}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    label_words: tuple[str, ...]
    template: str
    manual_prompt: str
    kind: str = "classification"  # classification | multiple_choice | generation | style_transfer
    description: str = ""
    metric: str | None = None  # generation tasks: a key of metrics.METRICS

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    def render(self, prompt: str, text: str) -> str:
        return fill_template(self.template, prompt, text)


def check_template(template: object, where: str = "") -> str:
    """The one check that a template holds both placeholders; returns it."""
    if not isinstance(template, str) or not all(p in template for p in ("{prompt}", "{input}")):
        raise UserError(
            f"template{where} must contain both {{prompt}} and {{input}} (got {template!r}; "
            "e.g. '{input} {prompt}')"
        )
    return template


def fill_template(template: str, prompt: str, text: str) -> str:
    """Fill `{prompt}` and `{input}` in one pass, so braces inside the input or prompt stay
    literal (a prompt that says "{input}" is not replaced by the input)."""
    return _PLACEHOLDER.sub(lambda m: prompt if m[1] == "prompt" else text, template)


def _words(*words: str) -> tuple[str, ...]:
    return tuple(" " + w for w in words)


_SENTIMENT2 = _words("terrible", "great")
_SENTIMENT5 = _words("terrible", "bad", "okay", "good", "great")

MC_TEMPLATE = "{prompt}\n{input}\nAnswer:"
GEN_TEMPLATE = "{prompt}\nInput: {input}\nOutput:"


def _mc(name: str, options: int, prompt: str, description: str) -> TaskSpec:
    return TaskSpec(
        name, letter_words(options), MC_TEMPLATE, prompt, "multiple_choice", description
    )


def _gen(name: str, prompt: str, description: str, metric: str = "exact_match") -> TaskSpec:
    return TaskSpec(name, (), GEN_TEMPLATE, prompt, "generation", description, metric)


_QA_TASKS = [
    _mc(
        "mmlu",
        4,
        "Answer the multiple-choice question with the letter of the correct option.",
        "MMLU four-option questions (mmlu:<subject> or an MMLU CSV)",
    ),
    _mc("implicatures", 2, "Does Speaker 2's answer mean yes or no?", "BIG-Bench implicatures"),
    _mc(
        "movie_recommendation",
        4,
        "Find a movie similar to the given list of movies.",
        "BIG-Bench movie recommendation",
    ),
    _mc(
        "navigate",
        2,
        "If you follow these instructions, do you return to the starting point?",
        "BIG-Bench navigate",
    ),
    _mc(
        "ruin_names",
        4,
        "Which of the following is a humorous edit of this artist or movie name?",
        "BIG-Bench ruin names (one question has 3 options)",
    ),
    _mc("snarks", 2, "Which statement is sarcastic?", "BIG-Bench snarks"),
]

_GEN_TASKS = [  # instruction induction (APE's metric per task) and free-text BIG-Bench
    _gen("antonyms", "Write a word that means the opposite of the input word.", "II antonyms"),
    _gen(
        "cause_and_effect",
        "Find the sentence that is the cause of the other.",
        "II cause and effect",
    ),
    _gen("first_word_letter", "Write the first letter of the input word.", "II first letter"),
    _gen(
        "informal_to_formal",
        "Rewrite the sentence in a formal style.",
        "II informal to formal",
        "f1",
    ),
    _gen("larger_animal", "Write the larger of the two animals.", "II larger animal"),
    _gen("negation", "Negate the input sentence.", "II negation"),
    _gen("num_to_verbal", "Write the number in words.", "II number to words"),
    _gen(
        "orthography_starts_with",
        "Write the words of the sentence that start with the letter in brackets.",
        "II words starting with a letter",
        "exact_set",
    ),
    _gen("sentiment", "Is the review positive or negative?", "II sentiment"),
    _gen("singular_to_plural", "Write the plural form of the input word.", "II plural"),
    _gen("sum", "Add the two numbers.", "II sum"),
    _gen(
        "taxonomy_animal",
        "Write the animals in the list.",
        "II animals in a list",
        "exact_set",
    ),
    _gen("object_counting", "Count the objects.", "BIG-Bench object counting"),
    _gen("tense", "Change the tense of the sentence as asked.", "BIG-Bench tense"),
    _gen("word_sorting", "Sort the words alphabetically.", "BIG-Bench word sorting"),
]

TST_TEMPLATE = '{prompt} "{input}" "'  # RLPrompt's: the rewrite ends at the closing quote


def _tst(name: str, prompt: str, description: str) -> TaskSpec:
    return TaskSpec(name, (), TST_TEMPLATE, prompt, "style_transfer", description)


_TST_TASKS = [
    _tst(
        "yelp-negative-to-positive",
        "Here is a rewrite of the text, which is more positive:",
        "Yelp sentiment transfer, negative to positive (tst/yelp/clean)",
    ),
    _tst(
        "yelp-positive-to-negative",
        "Here is a rewrite of the text, which is more negative:",
        "Yelp sentiment transfer, positive to negative (tst/yelp/clean)",
    ),
    _tst(
        "shakespeare",
        "Here is a rewrite of the text in Shakespeare's English:",
        "Modern English to Shakespearean (tst/shakespeare/100-shot/100-13)",
    ),
]

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
        *_QA_TASKS,
        *_GEN_TASKS,
        *_TST_TASKS,
    ]
}


def list_tasks(kind: str | None = None) -> list[str]:
    """Registered task names, of one kind (classification, multiple_choice, generation) or all."""
    return [name for name, t in _TASKS.items() if kind is None or t.kind == kind]


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
        data = yaml.safe_load(read_text(path))  # non-UTF-8 bytes: a one-line UserError
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
    check_template(template, f" in {path}")
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
