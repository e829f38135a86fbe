"""CLIP as a scorer (textual inversion): loading from the hub or a directory, image and text
embeddings, and cosine similarities with the `calls` counter the budget reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from stableprompt.errors import UserError
from stableprompt.models.loading import default_device, resolve_dtype
from stableprompt.tasks.images import open_image

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_HINT = (
    f"pass --target a CLIP hub id such as {DEFAULT_CLIP} or a local directory written by "
    "CLIPModel/CLIPProcessor.save_pretrained; hub models need internet on first use"
)


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


def _features(output) -> Tensor:
    """transformers 5 returns a model output holding the projected embedding; 4.x a tensor."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _normalise(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu()


class ClipScorer:
    """CLIP embeddings and cosine similarities, with the `calls` counter the budget reads.

    Text embeddings are cached per text, so a repeated prompt never reaches the text tower.
    """

    def __init__(self, model, processor, batch_size: int = 64):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.calls = 0  # (prompt, image) pairs scored, cache hits included: the budget unit
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
        self.calls += len(texts) * len(image_embeddings)
        return self.embed_texts(texts) @ image_embeddings.T
