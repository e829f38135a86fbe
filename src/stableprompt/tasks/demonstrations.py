"""Labelled train examples shown before the input (in-context demonstrations).

`--demonstrations K` makes a prompt out of K train examples instead of tokens: each is rendered
as the task's template filled with the manual prompt and the example, then its answer, one per
line, and the input follows in the same form. The manual prompt stays; what is learned is
which examples are shown, and in which order. A small target's accuracy depends strongly on
that choice (Zhao et al. 2021, "Calibrate Before Use"; Lu et al. 2022, "Fantastically Ordered
Prompts"), so it is a search space with room. By default the examples the policy may show and the
examples that reward it are disjoint halves of train; with `--demonstrations-from all` any may
be shown and a prompt is rewarded on the ones it does not show: an example scored right after
being shown its own label would teach nothing.
"""

from __future__ import annotations

import random

import torch

from stableprompt.errors import UserError
from stableprompt.tasks import Example
from stableprompt.tasks.registry import fill_template


def render_demonstrations(ctx, examples: list[Example], prompt: str) -> str:
    """Each example in the task's template with `prompt`, then its answer, one per line."""
    if ctx.generation:  # the first acceptable answer, after a space as the model would write it
        answers = [" " + ex.answers[0] for ex in examples]
    else:
        answers = [ctx.label_words[ex.label] for ex in examples]
    # Literal braces in an example would read as placeholders later: drop them.
    return "".join(
        fill_template(ctx.template, prompt, ex.text.replace("{", "(").replace("}", ")"))
        + answer
        + "\n"
        for ex, answer in zip(examples, answers, strict=True)
    )


def show_solved_pairs(ctx, k: int, seed: int) -> None:
    """Put `k` solved train pairs, drawn with `seed`, before every input (`--target-shots`):
    each in the task's template under the prompt, then its answer, so the target reads the
    prompt k + 1 times. The pairs leave train: a prompt rewarded on a pair the target has just
    been shown would be rewarded for nothing."""
    train = ctx.splits["train"]
    if len(train) <= k:
        raise UserError(
            f"{k} solved pairs before the input need more than {k} train examples (the pairs "
            f"shown do not reward); this task has {len(train)} (lower --target-shots or "
            "--num-shots)"
        )
    shown = random.Random(seed).sample(train, k)
    ctx.template = render_demonstrations(ctx, shown, "{prompt}") + ctx.template
    ctx.splits = {**ctx.splits, "train": [ex for ex in train if all(ex is not s for s in shown)]}


def split_for_demonstrations(train: list[Example]) -> tuple[list[Example], list[Example]]:
    """(examples that may be shown, examples that reward): every other example of each class,
    in file order, so both halves keep the class balance."""
    shown, rewarded, seen = [], [], {}
    for ex in train:
        key = ex.label if ex.target is None else None
        (rewarded if seen.get(key, 0) % 2 else shown).append(ex)
        seen[key] = seen.get(key, 0) + 1
    return shown, rewarded


def use_demonstrations(
    ctx, k: int, balanced: bool, pool: str = "half", flag: str = "--demonstrations"
) -> tuple[list[str], list[int] | None]:
    """Switch `ctx` to prompts made of demonstrations: its template becomes `{prompt}` followed
    by the task's template with the manual prompt in place, so the empty prompt is the manual
    prompt alone. With `pool` "half" its train split becomes the half that rewards and the other
    half are the candidates; with "all" every train example is both (train order: candidate i
    is train example i, see `unshown`). Returns the candidates rendered, one demonstration each
    (a prompt is K of them joined), and with `balanced` on a classification task each one's
    class (a prompt then shows each class at most `class_cap(k, classes)` times)."""
    manual = ctx.task.manual_prompt
    if "{" in manual or "}" in manual:
        raise UserError(
            f"{flag} keeps the manual prompt in the template, so it may not contain braces; "
            "rephrase the manual prompt"
        )
    train = ctx.splits["train"]
    if pool == "all":
        shown, rewarded = train, train
        if len(train) <= k:
            raise UserError(
                f"{flag} {k} needs more than {k} train examples (a prompt is rewarded on those it "
                f"does not show); this task has {len(train)} (lower {flag})"
            )
    else:
        shown, rewarded = split_for_demonstrations(train)
        if len(shown) < k or not rewarded:
            raise UserError(
                f"--demonstrations {k} needs more than {2 * k} train examples (half are shown, "
                f"half reward them); this task has {len(train)} (lower --demonstrations, or "
                "add --demonstrations-from all)"
            )
    classes = None
    if balanced and not ctx.generation:  # a generation task's examples have no classes
        classes = [ex.label for ex in shown]
        cap = class_cap(k, classes)
        if sum(min(classes.count(c), cap) for c in set(classes)) < k:
            raise UserError(
                f"--demonstrations {k}: the shown half of train has too few examples of some "
                f"classes for at most {cap} of each (lower --demonstrations, or add "
                "--no-balanced-demonstrations)"
            )
    texts = [render_demonstrations(ctx, [ex], manual) for ex in shown]
    ctx.template = "{prompt}" + fill_template(ctx.template, manual, "{input}")
    ctx.splits = {**ctx.splits, "train": rewarded}
    return texts, classes


def class_cap(k: int, classes: list[int]) -> int:
    """How often a balanced prompt of `k` demonstrations may show one class: once each when
    k equals the number of classes."""
    return -(-k // len(set(classes)))


def unshown(actions: torch.Tensor, examples: list[Example], train: list[Example]) -> torch.Tensor:
    """[prompts, examples] True where prompt p (`actions` [P, K]: the candidates it shows, train
    indices under `--demonstrations-from all`) does not show `examples[n]`: its reward keeps
    that pair."""
    index = {id(ex): i for i, ex in enumerate(train)}
    rows = torch.tensor([index[id(ex)] for ex in examples], device=actions.device)
    return ~(actions[:, :, None] == rows[None, None, :]).any(1)


def count_pairs(prompt: str, texts: list[str]) -> int:
    """How many distinct solved pairs `prompt` shows (a pair the data holds twice is one)."""
    return len({text for text in texts if text in prompt})


def shows(prompts: list[str], texts: list[str]) -> torch.Tensor:
    """[prompts, candidates] True where the prompt contains candidate n's demonstration (read
    from the text, so a candidate whose text another contains counts as shown: never less)."""
    return torch.tensor([[text in prompt for text in texts] for prompt in prompts])
