"""Data loading: k-shot TSV directories, tables, Hugging Face datasets, multiple-choice QA
(BIG-Bench `target_scores`, MMLU), instruction induction and the built-in demo.

Every loader returns plain `Example` lists so the rest of the library never touches pandas or
`datasets` objects. Bad user input raises `UserError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from stableprompt.errors import UserError


@dataclass(frozen=True)
class Example:
    text: str
    label: int = -1  # class index for classification; -1 when unlabelled
    target: str | tuple[str, ...] | None = None  # acceptable outputs for generation tasks

    @property
    def answers(self) -> tuple[str, ...]:
        """The acceptable outputs of a generation example (empty for classification)."""
        return (self.target,) if isinstance(self.target, str) else tuple(self.target or ())


Splits = dict[str, list[Example]]  # keys "train", "dev", "test" ("test" may be empty)

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
KSHOT_HINT = "pass --data a directory holding train.tsv, dev.tsv, test.tsv"
DEMO_FILE = "demo_sentiment.jsonl"


# ---------------------------------------------------------------------------- row -> Example


def _parse_label(value: Any, where: str, label_map: dict[str, int] | None) -> int:
    if label_map is not None:
        key = str(value).strip()
        if key not in label_map:
            known = ", ".join(sorted(label_map))
            raise UserError(
                f"label {key!r} at {where} is not in the label map ({known}); "
                "add it to the label map or fix the data"
            )
        return label_map[key]
    if isinstance(value, bool):  # bool is an int subclass; a True label is almost surely a bug
        raise UserError(
            f"label {value!r} at {where} is not an integer "
            "(use integer labels 0..C-1 or pass a label map)"
        )
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise UserError(
            f"label {value!r} at {where} is not an integer "
            "(use integer labels 0..C-1 or pass a label map)"
        ) from None


def _parse_target(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return str(value)


def _pick_column(columns: Sequence[str], wanted: str, what: str, source: str) -> str:
    """Return `wanted`, falling back from the default "text" to LM-BFF's "sentence"."""
    if wanted in columns:
        return wanted
    if wanted == "text" and "sentence" in columns:
        return "sentence"
    raise UserError(
        f"{what} column {wanted!r} not found in {source} "
        f"(available columns: {', '.join(columns)}; pass the right column name)"
    )


def rows_to_examples(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    source: str,
    text_column: str = "text",
    label_column: str | None = "label",
    label_map: dict[str, int] | None = None,
    target_column: str | None = None,
) -> list[Example]:
    """Turn dict rows into Examples. `label_column=None` leaves labels at -1 (generation)."""
    tcol = _pick_column(columns, text_column, "text", source)
    lcol = _pick_column(columns, label_column, "label", source) if label_column else None
    gcol = _pick_column(columns, target_column, "target", source) if target_column else None
    out = []
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}"
        for col in (tcol, lcol, gcol):
            if col and row.get(col) is None:
                raise UserError(
                    f"{where} has no value for column {col!r} (fill in the value or drop the row)"
                )
        label = _parse_label(row[lcol], where, label_map) if lcol else -1
        target = _parse_target(row[gcol]) if gcol else None
        out.append(Example(text=str(row[tcol]), label=label, target=target))
    return out


# ---------------------------------------------------------------------------- files


def read_text(path: Path, newline: str | None = None) -> str:
    """A user's text file as str: one-line errors for non-UTF-8 bytes and unreadable files.
    `newline` as for open(): "" keeps line endings untranslated, as the csv module wants."""
    try:
        with path.open(encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        if b"\x00" in e.object[:65536]:  # text never holds NUL bytes
            raise UserError(
                f"{path} is a binary file, not text (pass the text file you meant)"
            ) from None
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}; "
            "Latin-1?): re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 OLD > NEW"
        ) from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror} (check the path)") from None


def read_json(path: Path, looks_like: str) -> Any:
    """A user's JSON file; `looks_like` shows the expected shape in the error messages."""
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path} is empty (it should hold JSON like {looks_like}; re-create it)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        cut = "" if text.rstrip().endswith(("}", "]")) else "; it ends early: truncated?"
        raise UserError(
            f"{path} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno}{cut}); "
            "download or write the file again"
        ) from None


def _require(row: Any, keys: Sequence[str], where: str, looks_like: str) -> None:
    """`row` must be a JSON object holding `keys`."""
    if not isinstance(row, dict):
        problem = "is not a JSON object"
    elif missing := [k for k in keys if k not in row]:
        problem = "lacks " + ", ".join(map(repr, missing))
    else:
        return
    raise UserError(f"{where} {problem} (make it look like {looks_like})")


def _csv_text(path: Path) -> io.StringIO:
    """A .csv/.tsv file's text, ready for the csv module; a blank first line is refused because
    the csv module would take it for a header without columns."""
    text = read_text(path, newline="")
    if text.strip() and not text.splitlines()[0].strip():
        raise UserError(
            f"the first line of {path} is blank, but it must hold the first row: "
            "delete the blank line(s) at the top"
        )
    return io.StringIO(text, newline="")


def _csv_rows(reader: Iterable, path: Path) -> list:
    """All rows of a csv reader, with a one-line error for a malformed line."""
    try:
        return list(reader)
    except csv.Error as e:
        line = getattr(reader, "line_num", "?")
        raise UserError(
            f"cannot parse line {line} of {path}: {e} (fix that line's quoting or delimiter)"
        ) from None


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a .csv/.tsv/.jsonl file into (columns, rows)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(read_text(path).split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"invalid JSON on line {i} of {path}: {e.msg} "
                    "(each line must be one JSON object)"
                ) from None
            if not isinstance(row, dict):
                raise UserError(
                    f"line {i} of {path} is not a JSON object "
                    '(each line must look like {"text": ..., "label": ...})'
                )
            rows.append(row)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return columns, rows
    if suffix in (".csv", ".tsv"):
        # LM-BFF TSVs contain raw quote characters, so TSV is read without quoting.
        tsv = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
        reader = csv.DictReader(_csv_text(path), **(tsv if suffix == ".tsv" else {}))
        rows = _csv_rows(reader, path)
        columns = list(reader.fieldnames or [])
        for i, row in enumerate(rows, 1):
            if None in row.values() or None in row:
                raise UserError(
                    f"row {i} of {path} does not have {len(columns)} fields "
                    "(fix the row or check the delimiter)"
                )
        return columns, rows
    raise UserError(
        f"unsupported data file type {path.suffix!r}: {path} "
        f"(use one of {', '.join(TABLE_SUFFIXES)})"
    )


def load_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    label_map: dict[str, int] | None = None,
    target_column: str | None = None,
) -> list[Example]:
    """Load a .csv, .tsv (no quoting) or .jsonl file. The "text" column falls back to "sentence"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check the path passed to --data)")
    columns, rows = _read_rows(path)
    return rows_to_examples(
        rows, columns, str(path), text_column, label_column, label_map, target_column
    )


def load_kshot_dir(path: str | Path) -> Splits:
    """Load an LM-BFF/RLPrompt k-shot directory `<dir>/{train,dev,test}.tsv` (test optional)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"data directory not found: {path} ({KSHOT_HINT})")
    splits: Splits = {}
    for split in ("train", "dev", "test"):
        file = path / f"{split}.tsv"
        if not file.is_file():
            if split == "test":
                splits[split] = []  # e.g. RLPrompt's yelp-2 ships train/dev only
                continue
            raise UserError(f"data file not found: {file} ({KSHOT_HINT})")
        splits[split] = load_table(file, text_column="text", label_column="label")
    return splits


# ---------------------------------------------------------------------------- k-shot sampling


def sample_kshot(
    examples: Sequence[Example], k: int, seed: int, rounds: int = 1
) -> list[list[Example]]:
    """Draw `rounds` disjoint balanced sets of k examples per class (seeded, deterministic).

    rounds=2 gives a train set and a disjoint dev set from the same pool.
    """
    if k < 1:
        raise UserError(f"k must be at least 1, got {k} (pass --k 16 for RLPrompt's setting)")
    by_class: dict[int, list[Example]] = defaultdict(list)
    for ex in examples:
        by_class[ex.label].append(ex)
    rng = random.Random(seed)
    sets: list[list[Example]] = [[] for _ in range(rounds)]
    for label in sorted(by_class):
        pool = by_class[label]
        if len(pool) < k * rounds:
            raise UserError(
                f"class {label} has only {len(pool)} examples but {k * rounds} are "
                f"needed (lower --k or use a larger dataset)"
            )
        picked = rng.sample(pool, k * rounds)
        for r in range(rounds):
            sets[r].extend(picked[r * k : (r + 1) * k])
    for s in sets:
        rng.shuffle(s)  # mix classes so minibatches are not single-class
    return sets


# ---------------------------------------------------------------------------- Hugging Face


def _hf_examples(
    ds: Any, source: str, text_column: str, label_column: str, label_map: dict[str, int] | None
) -> list[Example]:
    columns = list(ds.column_names)
    tcol = _pick_column(columns, text_column, "text", source)
    lcol = _pick_column(columns, label_column, "label", source)
    rows = ({tcol: t, lcol: lab} for t, lab in zip(ds[tcol], ds[lcol], strict=True))
    return rows_to_examples(rows, [tcol, lcol], source, tcol, lcol, label_map)


def _open_hf(name: str, config: str | None) -> dict[str, Any]:
    import datasets  # deferred: importing `datasets` costs ~1 s

    if Path(name).is_dir():
        loaded = datasets.load_from_disk(name)
        return {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    try:
        return dict(datasets.load_dataset(name, config))
    except Exception as e:  # network, unknown name, missing config: all user-fixable
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"could not load Hugging Face dataset {name!r} (config {config!r}): "
            f"{msg} (check the name/config and that you are online)"
        ) from None


def load_hf(
    name: str,
    config: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    k: int | None = None,
    seed: int = 0,
    split_names: tuple[str, str, str] = ("train", "validation", "test"),
    label_map: dict[str, int] | None = None,
) -> Splits:
    """Load a Hugging Face dataset (hub name, or a directory written by `save_to_disk`).

    `split_names` names the (train, dev, test) splits. LM-BFF convention: when the test split is
    missing or unlabelled (GLUE's labels are -1) the validation split becomes the test set and dev
    is carved from train. With `k`, train holds k examples per class and dev another disjoint k
    per class (from the validation split if it is still available, else from train). Without
    `k`, a missing dev split is a seeded 10% hold-out of train.
    """
    raw = _open_hf(name, config)
    train_name, dev_name, test_name = split_names
    if train_name not in raw:
        raise UserError(
            f"dataset {name!r} has no split {train_name!r} "
            f"(available: {', '.join(raw)}; pass the right split names)"
        )

    def get(split: str | None) -> list[Example]:
        if split is None or split not in raw:
            return []
        return _hf_examples(raw[split], f"{name}[{split}]", text_column, label_column, label_map)

    train_all, dev_all, test = get(train_name), get(dev_name), get(test_name)
    if not any(ex.label >= 0 for ex in test):  # missing or unlabelled test split
        test, dev_all = dev_all, []

    if k is None:
        if dev_all:
            return {"train": train_all, "dev": dev_all, "test": test}
        shuffled = train_all[:]
        random.Random(seed).shuffle(shuffled)
        n_dev = max(1, len(shuffled) // 10)
        return {"train": shuffled[n_dev:], "dev": shuffled[:n_dev], "test": test}
    if dev_all:
        (train,) = sample_kshot(train_all, k, seed)
        (dev,) = sample_kshot(dev_all, k, seed + 1)
    else:
        train, dev = sample_kshot(train_all, k, seed, rounds=2)
    return {"train": train, "dev": dev, "test": test}


# ---------------------------------------------------------------------------- demo + entry point


def load_demo() -> Splits:
    """The packaged 96-sentence movie-review set: 16/class train, 16/class dev, the rest test."""
    text = resources.files("stableprompt").joinpath("data", DEMO_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    examples = rows_to_examples(rows, ["text", "label"], DEMO_FILE)
    train, dev, test = [], [], []
    for label in (0, 1):  # fixed split: no randomness, so every run sees the same demo data
        cls = [ex for ex in examples if ex.label == label]
        train += cls[:16]
        dev += cls[16:32]
        test += cls[32:]
    return {"train": train, "dev": dev, "test": test}


# ---------------------------------------------------------------------------- multiple choice

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BIGBENCH_EXAMPLE = (
    '{"input": ..., "target_scores": {"option": 1, ...}} or {"input": ..., "target": ...}'
)
BIGBENCH_SHAPE = '{"examples": [{"input": ..., "target_scores": {...}}, ...]}'
II_SHAPE = '{"examples": {"1": {"input": ..., "output": ...}, ...}}'


def letter_words(n: int) -> tuple[str, ...]:
    """Label words for an n-option question: " A", " B", ... (scored after "Answer:")."""
    return tuple(" " + c for c in LETTERS[:n])


def mc_example(question: str, options: Sequence[str], answer: int) -> Example:
    """A multiple-choice question as a classification example: the text lists the options as
    "A. ...", one per line, after the question; the label is the index of the right letter.

    Questions with fewer options than the task's label words just list fewer letters; the unused
    letters stay label words (a prediction of one counts as wrong), so one task keeps one fixed
    set of label words and the classification reward/accuracy apply unchanged.
    """
    if not 2 <= len(options) <= len(LETTERS):
        raise UserError(
            f"a multiple-choice question needs 2..{len(LETTERS)} options, got {len(options)} "
            f"(fix the question {question[:40]!r})"
        )
    if not 0 <= answer < len(options):
        raise UserError(f"answer index {answer} is outside the {len(options)} options")
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(options)]
    return Example(text="\n".join(lines), label=answer)


def load_bigbench(path: str | Path) -> list[Example]:
    """A BIG-Bench task.json: `target_scores` examples become multiple-choice examples (the right
    option is the first with the highest score), `target` examples become generation examples
    (a list target means several acceptable answers)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"BIG-Bench task file not found: {path} (check the task name and --data)")
    task = read_json(path, BIGBENCH_SHAPE)
    _require(task, ["examples"], str(path), BIGBENCH_SHAPE)
    if not isinstance(task["examples"], list):
        raise UserError(f'"examples" in {path} is not a list (make it look like {BIGBENCH_SHAPE})')
    return [
        _bigbench_example(ex, f"example {i} of {path}") for i, ex in enumerate(task["examples"], 1)
    ]


def _bigbench_example(ex: Any, where: str) -> Example:
    _require(ex, ["input"], where, BIGBENCH_EXAMPLE)
    if "target_scores" in ex:
        scores = ex["target_scores"]
        if not isinstance(scores, dict) or not all(_is_number(v) for v in scores.values()):
            raise UserError(
                f"target_scores of {where} must map each option to a number "
                '(e.g. {"yes": 1, "no": 0}; fix the file)'
            )
        values = list(scores.values())  # the answer: the first option with the highest score
        best = max(range(len(values)), key=values.__getitem__, default=0)
        return mc_example(ex["input"], list(scores), best)
    if "target" in ex:
        return Example(text=str(ex["input"]).strip(), target=_parse_target(ex["target"]))
    raise UserError(
        f"{where} has neither target_scores nor target (make it look like {BIGBENCH_EXAMPLE})"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mmlu_answer(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    key = str(value).strip().upper()
    if len(key) != 1 or key not in LETTERS[:4]:
        raise UserError(f"answer {value!r} at {where} is not one of A, B, C, D (fix the data)")
    return LETTERS.index(key)


def mmlu_row_to_example(row: dict[str, Any]) -> Example:
    """A `cais/mmlu` row ({question, choices: [4], answer: 0..3}) as a multiple-choice example."""
    return mc_example(row["question"], row["choices"], _mmlu_answer(row["answer"], "mmlu row"))


def load_mmlu_csv(path: str | Path) -> list[Example]:
    """The original MMLU CSV layout: question, A, B, C, D, answer letter; no header (a first row
    whose last field is "answer" is taken as a header and skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MMLU file not found: {path} (check the path)")
    rows = [row for row in _csv_rows(csv.reader(_csv_text(path)), path) if row]  # skip blanks
    if rows and rows[0][-1].strip().lower() == "answer":
        rows = rows[1:]
    out = []
    for i, row in enumerate(rows, 1):
        if len(row) != 6:
            raise UserError(
                f"row {i} of {path} has {len(row)} fields, expected 6 "
                "(question, A, B, C, D, answer)"
            )
        out.append(mc_example(row[0], row[1:5], _mmlu_answer(row[5], f"{path} row {i}")))
    return out


def load_mmlu_hf(subject: str) -> Splits:
    """`cais/mmlu` from the hub: its 5-question `dev` split trains, `validation` is dev, `test`
    tests."""
    raw = _open_hf("cais/mmlu", subject)
    names = {"train": "dev", "dev": "validation", "test": "test"}
    return {k: [mmlu_row_to_example(r) for r in raw.get(v, [])] for k, v in names.items()}


# ---------------------------------------------------------------------------- instruction induction

DATA_ROOT_ENV = "STABLEPROMPT_DATA"
DEFAULT_DATA_ROOT = Path("../shared/data")


def data_root(root: str | Path | None = None) -> Path:
    """Where `ii:` and `bbii:` specs look: `root`, else $STABLEPROMPT_DATA, else
    ../shared/data (relative to the working directory)."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


def load_ii_file(path: str | Path) -> list[Example]:
    """One APE instruction-induction file `{"examples": {"1": {...}, ...}}`. `output` may be a
    list of acceptable answers. cause_and_effect stores {cause, effect}: as in APE, the input shows
    both sentences in a (seeded, per-example) random order and the answer is the cause."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"instruction-induction file not found: {path} (check the task and --data)")
    data = read_json(path, II_SHAPE)
    _require(data, ["examples"], str(path), II_SHAPE)
    if not isinstance(data["examples"], dict):
        raise UserError(f'"examples" in {path} is not a mapping (make it look like {II_SHAPE})')
    return [_ii_example(row, key, path) for key, row in data["examples"].items()]


def _ii_example(row: Any, key: str, path: Path) -> Example:
    where = f"example {key!r} of {path}"
    if isinstance(row, dict) and "cause" in row:
        _require(row, ["cause", "effect"], where, '{"cause": ..., "effect": ...}')
        first, second = row["cause"], row["effect"]
        if random.Random(f"{path.name}:{key}").random() < 0.5:
            first, second = second, first
        return Example(f"Sentence 1: {first} Sentence 2: {second}", target=row["cause"])
    _require(row, ["input", "output"], where, '{"input": ..., "output": ...}')
    return Example(str(row["input"]), target=_parse_target(row["output"]))


def _split_pool(pool: list[Example], k: int | None, seed: int) -> tuple[list, list]:
    """(train, dev) from one pool: k (per class for labelled data) each, disjoint, or a seeded
    90/10 split without k."""
    if k is not None:
        train, dev = sample_kshot(pool, k, seed, rounds=2)
        return train, dev
    shuffled = pool[:]
    random.Random(seed).shuffle(shuffled)
    n_dev = max(1, len(shuffled) // 10)
    return shuffled[n_dev:], shuffled[:n_dev]


def load_ii(
    task: str, root: str | Path | None = None, k: int | None = None, seed: int = 0
) -> Splits:
    """`<root>/ii/induce/<task>.json` is split into train/dev, `execute/<task>.json` is test."""
    base = data_root(root) / "ii"
    train, dev = _split_pool(load_ii_file(base / "induce" / f"{task}.json"), k, seed)
    return {"train": train, "dev": dev, "test": load_ii_file(base / "execute" / f"{task}.json")}


def load_bbii(
    task: str, root: str | Path | None = None, k: int | None = None, seed: int = 0
) -> Splits:
    """`<root>/bbii/<task>/task.json`: a fixed half (shuffled with seed 0, whatever `seed`) is
    the test set; the rest is split into train/dev like `load_ii`."""
    examples = load_bigbench(data_root(root) / "bbii" / task / "task.json")
    random.Random(0).shuffle(examples)
    half = len(examples) // 2
    train, dev = _split_pool(examples[half:], k, seed)
    return {"train": train, "dev": dev, "test": examples[:half]}


def _is_saved_hf_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_data(
    spec: str | None,
    text_column: str = "text",
    label_column: str = "label",
    label_map: dict[str, int] | None = None,
    k: int | None = None,
    seed: int = 0,
    train: str | None = None,
    dev: str | None = None,
    root: str | Path | None = None,
) -> Splits:
    """One entry point for the CLI. `spec` may be:

    - None: the built-in demo sentiment set (`load_demo`).
    - `hf:<name>[:<config>]`: a Hugging Face hub dataset (`load_hf`, k-shot if `k` is given).
    - `ii:<task>` / `bbii:<task>`: instruction induction / BIG-Bench II under the data root
      (`root`, else $STABLEPROMPT_DATA, else ../shared/data; see `load_ii`, `load_bbii`).
    - `mmlu:<subject>`: `cais/mmlu` from the hub; `mmlu:<file.csv>`: an MMLU CSV as the test
      split (`train`/`dev` MMLU CSVs optional).
    - a directory holding train.tsv/dev.tsv[/test.tsv]: an LM-BFF k-shot directory.
    - a directory written by `datasets.save_to_disk`: loaded like a hub dataset.
    - a .csv/.tsv/.jsonl file: used as the TEST split; pass `train`/`dev` files to train on.
      (Evaluation-only runs, e.g. scoring a manual prompt, need nothing else.)
    """
    if spec is None:
        return load_demo()
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise UserError(
                f"empty dataset name in {spec!r} (use hf:<name>[:<config>], e.g. hf:SetFit/sst2)"
            )
        return load_hf(
            name, config or None, text_column, label_column, k, seed, label_map=label_map
        )
    prefix, _, rest = spec.partition(":")
    if prefix in ("ii", "bbii", "mmlu") and not rest:
        raise UserError(f"empty name in {spec!r} (use {prefix}:<name>, e.g. ii:antonyms)")
    if prefix == "ii":
        return load_ii(rest, root, k, seed)
    if prefix == "bbii":
        return load_bbii(rest, root, k, seed)
    if prefix == "mmlu":
        if rest.lower().endswith(".csv"):
            files = {"train": train, "dev": dev, "test": rest}
            return {s: load_mmlu_csv(f) if f else [] for s, f in files.items()}
        return load_mmlu_hf(rest)
    path = Path(spec)
    if path.is_dir():
        if (path / "train.tsv").is_file():
            return load_kshot_dir(path)
        if _is_saved_hf_dir(path):
            return load_hf(str(path), None, text_column, label_column, k, seed, label_map=label_map)
        raise UserError(
            f"directory {path} holds neither train.tsv nor a saved Hugging Face "
            f"dataset ({KSHOT_HINT}, or a .csv/.tsv/.jsonl file)"
        )
    if not path.exists():
        raise UserError(f"data not found: {spec} (pass a file, a directory, or hf:<name>)")

    def table(p: str | None) -> list[Example]:
        return load_table(p, text_column, label_column, label_map) if p else []

    return {"train": table(train), "dev": table(dev), "test": table(spec)}


def validate_labels(
    splits: Splits, num_classes: int, required: Iterable[str] = ("train",), generation: bool = False
) -> None:
    """Check required splits are non-empty and every label lies in 0..num_classes-1
    (for generation tasks: every example has a target)."""
    for split in required:
        if not splits.get(split):
            raise UserError(
                f"the {split} split is empty (give data with a {split} split, "
                "e.g. an LM-BFF directory with train.tsv and dev.tsv)"
            )
    for split, examples in splits.items():
        for i, ex in enumerate(examples):
            if generation:
                if ex.target is None:
                    raise UserError(
                        f"{split} example {i + 1} has no target for this generation task "
                        "(give data with target outputs)"
                    )
                continue
            if not 0 <= ex.label < num_classes:
                raise UserError(
                    f"label {ex.label} of {split} example {i + 1} is outside "
                    f"0..{num_classes - 1} for this {num_classes}-class task "
                    "(fix the data or pick a task with matching label words)"
                )
