"""The textual-inversion task context (PIN): a prompt's CLIP text embedding against target images.

The raw reward is REWARD_SCALE x the mean cosine similarity to the split's images; `evaluate` and
`report` give the plain mean cosine ("clip_similarity", in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from stableprompt.contexts.base import TaskContext, pick
from stableprompt.errors import UserError
from stableprompt.models.clip import DEFAULT_CLIP, ClipScorer, load_clip
from stableprompt.tasks.images import (
    IMAGE_TASK,
    REWARD_SCALE,
    TOKEN_POLICY_ALGOS,
    ImageExample,
    list_images,
    split_images,
)
from stableprompt.tasks.registry import TaskSpec
from stableprompt.tasks.rewards import example_mean


def check_image_template(template: str | None) -> str:
    """The text CLIP reads: the prompt alone, or a template such as 'a photo of {prompt}'."""
    if template is None:
        return "{prompt}"
    if "{prompt}" not in template or "{input}" in template:
        raise UserError(
            f"an image task's template must contain {{prompt}} and no {{input}} (got {template!r}; "
            "e.g. 'a photo of {prompt}')"
        )
    return template


class ImageTaskContext(TaskContext):
    """What the trainer and the token policy algorithms need, for a set of target images."""

    label_search = None  # no label words to choose

    def __init__(
        self,
        splits: dict[str, list[ImageExample]],
        image_embeddings: Tensor,
        scorer: ClipScorer,
        template: str | None = None,
    ):
        for name in ("train", "dev"):
            if not splits.get(name):
                raise UserError(f"the image task has no {name} images (add images to --data)")
        self.splits, self.image_embeddings, self.scorer = splits, image_embeddings, scorer
        self.template = check_image_template(template)
        self.generation, self.label_words = False, []  # read by code written for text tasks
        self.task = TaskSpec(
            name=IMAGE_TASK,
            label_words=(),
            template=self.template,
            manual_prompt="",
            kind="image",
            description="a prompt whose CLIP text embedding matches the target images",
            metric="clip_similarity",
        )

    def similarities(self, prompts: list[str], examples: Sequence[ImageExample]) -> Tensor:
        """[prompts, examples] cosine similarity of each prompt's text to each image."""
        texts = [self.template.replace("{prompt}", p) for p in prompts]
        rows = torch.tensor([ex.index for ex in examples], dtype=torch.long)
        return self.scorer.similarities(texts, self.image_embeddings[rows])

    def rewards(
        self,
        prompts: list[str],
        examples: Sequence[ImageExample],
        kind: str = "rlprompt",
        keep: Tensor | None = None,
    ) -> Tensor:
        """[prompts] raw reward: REWARD_SCALE x mean cosine similarity (`kind` is ignored: one
        reward serves every algorithm); `keep` leaves pairs out of the mean."""
        return REWARD_SCALE * example_mean(self.similarities(prompts, examples), keep)

    @property
    def metric(self) -> str:
        return "clip_similarity"

    def example_scores(
        self,
        prompts: list[str],
        split: str,
        label_words: list[str] | None = None,
        rows: Sequence[int] | None = None,
    ) -> Tensor:
        """[prompts, images] cosine similarity of each prompt with each image of a split."""
        return self.similarities(prompts, pick(self.splits[split], rows))

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        """Mean cosine ("accuracy"), a normal 95% interval on it, its sd and n."""
        examples = self.splits[split]
        if not examples:
            raise UserError(f"no {split} images to evaluate (add images to --data)")
        sims = self.similarities([prompt], examples)[0].double()
        n, mean = len(sims), sims.mean().item()
        sd = sims.std().item() if n > 1 else 0.0
        half = 1.96 * sd / math.sqrt(n)
        return {
            "accuracy": mean,
            "ci95": (mean - half, mean + half),
            "n": n,
            "sd": sd,
            "per_class_recall": [],
        }


def load_image_context(
    data: str | Path | None,
    target: str = DEFAULT_CLIP,
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    template: str | None = None,
    clip: tuple | None = None,
) -> ImageTaskContext:
    """The image folder `data` scored by the CLIP model `target` (or `clip`, a (model,
    processor) pair already loaded). Image embeddings are computed here, once."""
    paths = list_images(data)  # before loading CLIP: a bad folder fails fast
    model, processor = clip or load_clip(target, dtype)
    scorer = ClipScorer(model, processor)
    embeddings = scorer.embed_images(paths)
    splits = {
        name: [ImageExample(paths[i].name, i) for i in indices]
        for name, indices in split_images(len(paths), seed).items()
    }
    return ImageTaskContext(splits, embeddings, scorer, template)


def build_image_context(config, clip: tuple | None = None) -> ImageTaskContext:
    """The context of a `TrainConfig`: images from `config.data`, CLIP from `config.target`."""
    if config.algo not in TOKEN_POLICY_ALGOS:
        raise UserError(
            f"textual inversion trains a token policy: use --algo {' or '.join(TOKEN_POLICY_ALGOS)}"
            f" (got {config.algo})"
        )
    return load_image_context(
        config.data, config.target, config.dtype, config.seed, config.template, clip
    )
