"""Text style transfer data: the Yelp "clean" sentiment files and parallel k-shot TSVs
(Shakespeare), read into the task's splits plus the labelled sentences that train and test its
style classifier.

Yelp (`<dir>/sentiment.{dev,test,ref}.{0,1}.clean`, 0 = negative, 1 = positive): the distinct
dev sentences not in the test or reference files are shuffled once (fixed seed, so every run sees
the same data); the first `style_size` of each class train the style classifier (the last fifth
of them held out for its accuracy), the following source-style lines give the task's dev and train
inputs, and the 500 test lines of the source style, with their human references (`ref.<source>`,
line-aligned), are the test set.

K-shot TSV (`<dir>/{train,dev,test}.tsv`, `text<TAB>label`): the source-style rows are the
inputs of each split; when both styles have as many rows, the i-th row of one style is the
rewrite of the i-th row of the other and serves as its reference. The classifier trains on
train.tsv and is tested on dev.tsv. In the shared Shakespeare files label 0 is Shakespearean
("Ay, lord.") and 1 modern ("Yes, my lord.").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from stableprompt.errors import UserError
from stableprompt.tasks.data import Example, Splits, load_table, read_text

YELP_MARKER = "sentiment.test.0.clean"


@dataclass
class StyleData:
    """A style transfer data set: task splits and the style classifier's sentences."""

    splits: Splits
    style_train: list[Example]  # labelled sentences the style classifier learns from
    style_heldout: list[Example]  # labelled sentences its accuracy is reported on


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file, stripped."""
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check --data for this style transfer task)")
    return [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]


def read_references(path: Path) -> list[str]:
    """One reference per line; a `source<TAB>reference` line gives its last field."""
    return [line.split("\t")[-1].strip() for line in read_lines(path)]


def _yelp_pools(root: Path) -> dict[int, list[str]]:
    """Distinct dev sentences per class, shuffled with a fixed seed. The shared dev files
    contain every test sentence, and some lines twice or in both classes: all are dropped, so the
    classifier's held-out sentences and the task's inputs never overlap its data or the test set."""
    held = {
        t
        for kind in ("test", "ref")
        for label in (0, 1)
        for t in read_lines(root / f"sentiment.{kind}.{label}.clean")
    }
    lines = {c: dict.fromkeys(read_lines(root / f"sentiment.dev.{c}.clean")) for c in (0, 1)}
    both = lines[0].keys() & lines[1].keys()
    pools = {}
    for label in (0, 1):
        pools[label] = [t for t in lines[label] if t not in held and t not in both]
        random.Random(0).shuffle(pools[label])
    return pools


def load_yelp_tst(
    root: str | Path,
    source_label: int,
    train_size: int = 1000,
    dev_size: int = 32,
    style_size: int = 1000,
) -> StyleData:
    """Yelp sentiment transfer from `source_label` (0 negative, 1 positive) to the other."""
    root = Path(root)
    pools = _yelp_pools(root)
    n_fit = style_size * 4 // 5
    style = {c: [Example(t, c) for t in pools[c][:style_size]] for c in (0, 1)}
    rest = pools[source_label][style_size:]
    if len(rest) < dev_size + train_size:
        raise UserError(
            f"{root} has {len(rest)} unused source sentences, fewer than dev + train "
            f"({dev_size} + {train_size}); lower them"
        )
    dev = [Example(t, source_label) for t in rest[:dev_size]]
    train = [Example(t, source_label) for t in rest[dev_size : dev_size + train_size]]
    sources = read_lines(root / f"sentiment.test.{source_label}.clean")
    refs = read_references(root / f"sentiment.ref.{source_label}.clean")
    if len(refs) != len(sources):
        raise UserError(f"{len(refs)} references for {len(sources)} test sentences in {root}")
    test = [Example(s, source_label, r) for s, r in zip(sources, refs, strict=True)]
    return StyleData(
        {"train": train, "dev": dev, "test": test},
        style_train=style[0][:n_fit] + style[1][:n_fit],
        style_heldout=style[0][n_fit:] + style[1][n_fit:],
    )


def _parallel_split(rows: list[Example], source_label: int) -> list[Example]:
    """Source-style rows, each with its counterpart of the other style as reference if the
    file is parallel (both styles equally many)."""
    sources = [r for r in rows if r.label == source_label]
    others = [r for r in rows if r.label == 1 - source_label]
    if len(sources) != len(others):
        return sources
    return [Example(s.text, s.label, o.text) for s, o in zip(sources, others, strict=True)]


def load_kshot_tst(root: str | Path, source_label: int) -> StyleData:
    """A `{train,dev,test}.tsv` style transfer directory (labels 0/1)."""
    root = Path(root)
    tables = {split: load_table(root / f"{split}.tsv") for split in ("train", "dev", "test")}
    for split, rows in tables.items():
        if {r.label for r in rows} - {0, 1}:
            raise UserError(f"{root}/{split}.tsv has labels other than 0 and 1 (two styles only)")
    splits = {split: _parallel_split(rows, source_label) for split, rows in tables.items()}
    return StyleData(splits, style_train=tables["train"], style_heldout=tables["dev"])


def load_style_data(path: str | Path, source_label: int, **sizes: int) -> StyleData:
    """A Yelp clean directory or a k-shot TSV directory, recognised by its files."""
    path = Path(path)
    if (path / YELP_MARKER).is_file():
        return load_yelp_tst(path, source_label, **sizes)
    if (path / "train.tsv").is_file():
        return load_kshot_tst(path, source_label)
    raise UserError(
        f"{path} is not a style transfer data directory (pass a directory with "
        f"sentiment.{{dev,test,ref}}.{{0,1}}.clean files, or with train.tsv, dev.tsv, test.tsv)"
    )
