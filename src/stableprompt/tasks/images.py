"""Textual inversion from images (PIN, Choi et al. 2024): find a prompt whose CLIP text embedding
matches a set of target images.

The agent is the usual token policy (`sql`, `sparse-sql`); the CLIP model only scores. The raw
reward of a prompt is 100 x the mean cosine similarity between its normalised CLIP text embedding
and the normalised embeddings of the images (the CLIP-score scale, not clipped at 0); dev/test
scores (`accuracy`, `report`) are the plain mean cosine, in [-1, 1]. The SQL algorithms z-score
rewards per step, so the x100 only makes logged rewards readable.

`ImageTaskContext` duck-types the parts of `trainer.TaskContext` that the trainer and the token
policy algorithms use: `splits`, `scorer.queries`, `rewards`, `accuracy` and `report`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stableprompt.errors import UserError
from stableprompt.tasks.registry import TaskSpec

IMAGE_TASK = "textual-inversion"  # the --task name that selects this context
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
REWARD_SCALE = 100.0  # raw reward = 100 x mean cosine similarity (CLIP-score scale)
MIN_IMAGES_TO_SPLIT = 10  # fewer images: every split holds all of them (pure inversion)
TOKEN_POLICY_ALGOS = ("sql", "sparse-sql")
CLIP_HINT = (
    f"pass --target a CLIP hub id such as {DEFAULT_CLIP} or a local directory written by "
    "CLIPModel/CLIPProcessor.save_pretrained; hub models need internet on first use"
)


@dataclass(frozen=True)
class ImageExample:
    """One target image, Example-like: `text` is the file name, `index` its embedding row."""

    text: str
    index: int
    label: int = -1
    target: str | None = None


# ------------------------------------------------------------------------------------ loading


def _clip_location(name: str) -> tuple[str, dict]:
    """A local directory (never touches the network) or a hub id `org/name`."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), {"local_files_only": True}
    if name.count("/") == 1 and not name.startswith(("/", ".", "~")):
        return name, {}
    raise UserError(f"CLIP model {name!r} is neither a local directory nor a hub id ({CLIP_HINT})")


def load_clip(name: str = DEFAULT_CLIP, dtype: str | torch.dtype = "float32", device=None):
    """Return (CLIPModel in eval mode, its processor) from a hub id or a local directory."""
    from transformers import AutoConfig, AutoProcessor, CLIPModel

    from stableprompt.models.loading import default_device, resolve_dtype

    location, kwargs = _clip_location(name)
    try:
        model_type = AutoConfig.from_pretrained(location, **kwargs).model_type
        if model_type != "clip":  # CLIPModel would load it anyway, with random weights
            raise UserError(f"{name!r} is a {model_type} model, not CLIP ({CLIP_HINT})")
        processor = AutoProcessor.from_pretrained(location, **kwargs)
        model = CLIPModel.from_pretrained(location, dtype=resolve_dtype(dtype), **kwargs)
    except (OSError, ValueError) as err:
        first_line = (str(err).splitlines() or [repr(err)])[0]
        raise UserError(f"could not load CLIP model {name!r}: {first_line} ({CLIP_HINT})") from err
    model.to(device or default_device()).eval()
    return model, processor


def list_images(folder: str | Path | None) -> list[Path]:
    """The image files directly inside `folder` (sorted by name; other files are ignored)."""
    if folder is None:
        raise UserError("textual inversion needs images: pass --data a folder of image files")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder} (pass --data a folder of image files)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(
            f"no image files in {folder} (put {', '.join(IMAGE_SUFFIXES)} files directly in it)"
        )
    return paths


def open_image(path: Path):
    """An RGB PIL image; an unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot read image {path}: {err} (remove or replace the file)") from None


def split_images(n: int, seed: int) -> dict[str, list[int]]:
    """Image indices per split. With fewer than MIN_IMAGES_TO_SPLIT images every split holds them
    all: the task is then to describe exactly this set, and test re-scores the training images.
    Otherwise a seeded shuffle gives dev and test 20% each (at least one image) and train the rest.
    """
    if n < MIN_IMAGES_TO_SPLIT:
        return {"train": list(range(n)), "dev": list(range(n)), "test": list(range(n))}
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = max(1, round(0.2 * n))
    parts = {"dev": order[:held], "test": order[held : 2 * held], "train": order[2 * held :]}
    return {k: sorted(v) for k, v in parts.items()}


# ------------------------------------------------------------------------------------ scoring


def _features(output) -> Tensor:
    """transformers 5 returns a model output holding the projected embedding; 4.x a tensor."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _normalise(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu()


class ClipScorer:
    """CLIP embeddings and cosine similarities, with the `queries` counter the budget reads.

    Text embeddings are cached per text, so a repeated prompt never reaches the text tower.
    """

    def __init__(self, model, processor, batch_size: int = 64):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.queries = 0  # (prompt, image) pairs scored, cache hits included: the budget unit
        self.text_encoded = 0  # texts that went through the text tower (cache misses)
        self._text_cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, paths: Sequence[Path]) -> Tensor:
        """[images, dim] normalised float32 embeddings; files are opened one batch at a time."""
        rows = []
        for start in range(0, len(paths), self.batch_size):
            images = [open_image(p) for p in paths[start : start + self.batch_size]]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self.model.dtype)
            rows.append(_normalise(_features(self.model.get_image_features(pixel_values=pixels))))
        return torch.cat(rows)

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> Tensor:
        tokenizer = self.processor.tokenizer
        max_length = self.model.config.text_config.max_position_embeddings
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        self.text_encoded += len(texts)
        return _normalise(_features(self.model.get_text_features(**batch)))

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """[texts, dim] normalised float32 embeddings, each distinct new text encoded once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            self._text_cache.update(zip(chunk, self._encode_texts(chunk)))
        return torch.stack([self._text_cache[t] for t in texts])

    def similarities(self, texts: Sequence[str], image_embeddings: Tensor) -> Tensor:
        """[texts, images] cosine similarities."""
        self.queries += len(texts) * len(image_embeddings)
        return self.embed_texts(texts) @ image_embeddings.T


# ------------------------------------------------------------------------------------ context


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


class ImageTaskContext:
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
        self, prompts: list[str], examples: Sequence[ImageExample], kind: str = "rlprompt"
    ) -> Tensor:
        """[prompts] raw reward: REWARD_SCALE x mean cosine similarity (`kind` is ignored: one
        reward serves every algorithm)."""
        return REWARD_SCALE * self.similarities(prompts, examples).mean(-1)

    def accuracy(self, prompts: list[str], split: str) -> list[float]:
        """Mean cosine similarity of each prompt over a split's images."""
        return self.similarities(prompts, self.splits[split]).mean(-1).tolist()

    def report(self, prompt: str, split: str) -> dict:
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
