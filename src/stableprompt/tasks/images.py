"""Textual inversion from images (PIN, Choi et al. 2024): find a prompt whose CLIP text embedding
matches a set of target images.

The agent is the usual token policy (`sql`, `sparse-sql`); the CLIP model only scores. The raw
reward of a prompt is 100 x the mean cosine similarity between its normalised CLIP text embedding
and the normalised embeddings of the images (the CLIP-score scale, not clipped at 0); dev/test
scores (`accuracy`, `report`) are the plain mean cosine, in [-1, 1]. The SQL algorithms z-score
rewards per step, so the x100 only makes logged rewards readable.

This module holds the task: the image files and their splits. CLIP is loaded and scores texts in
`stableprompt.models.clip`; the task context is `stableprompt.contexts.image.ImageTaskContext`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from stableprompt.errors import UserError

IMAGE_TASK = "textual-inversion"  # the --task name that selects this context
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
REWARD_SCALE = 100.0  # raw reward = 100 x mean cosine similarity (CLIP-score scale)
MIN_IMAGES_TO_SPLIT = 10  # fewer images: every split holds all of them (pure inversion)
TOKEN_POLICY_ALGOS = ("sql", "sparse-sql")


@dataclass(frozen=True)
class ImageExample:
    """One target image, Example-like: `text` is the file name, `index` its embedding row."""

    text: str
    index: int
    label: int = -1
    target: str | None = None


# ------------------------------------------------------------------------------------ images


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
