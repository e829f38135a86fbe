"""Models: loading (hub, local, GGUF, offline aliases) and target scoring backends."""

from stableprompt.models.loading import ALIASES, is_masked_lm, load_lm, resolve_dtype
from stableprompt.models.scoring import LocalScorer, MaskedLMScorer, NaiveScorer, TargetScorer


def build_scorer(target: str, dtype: str = "auto") -> TargetScorer:
    """A scorer for `--target`: `openai:<model>@<url>[,<url>...]` for a server, else a local LM."""
    if target.startswith("openai:"):
        from stableprompt.models.remote import OpenAIScorer

        return OpenAIScorer.from_spec(target)
    if is_masked_lm(target, dtype):
        model, tokenizer = load_lm(target, dtype=dtype, masked=True, shared=True)
        return MaskedLMScorer(model, tokenizer)
    model, tokenizer = load_lm(target, dtype=dtype, shared=True)
    return LocalScorer(model, tokenizer)


__all__ = [
    "ALIASES",
    "LocalScorer",
    "NaiveScorer",
    "TargetScorer",
    "build_scorer",
    "load_lm",
    "resolve_dtype",
]
