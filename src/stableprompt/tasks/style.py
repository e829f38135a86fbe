"""Text style transfer scoring, as RLPrompt does it (Deng et al. 2022, section 3.3 and App. C).

The target rewrites a sentence under the prompt; each output is scored for *content* (cosine of
sentence embeddings of input and output) and *style* (a classifier's probability of the target
style), both x100. Training reward per input: the mean of the two, best of the input's samples,
z-scored per input across the step's prompts; a prompt's reward is the mean over its inputs.
Evaluation adds *fluency* (the output's perplexity relative to the input's) and reports RLPrompt's
joint score J (mean of content x style x fluency per sentence), the geometric mean of the three
averages, and BLEU against human references.

The style classifier is logistic regression on the same sentence embeddings, trained here on the
task's own labelled sentences (full-batch Adam from zero weights: deterministic).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stableprompt.errors import UserError
from stableprompt.tasks.metrics import cut_at_stops

OUTPUT_STOPS = ('"', "\n")  # the template opens a quote: the rewrite ends where it closes


def clean_output(text: str, lowercase: bool = False) -> str:
    """The rewrite inside the template's open quote: cut at the closing quote or newline."""
    text = cut_at_stops(text, OUTPUT_STOPS).strip()
    return text.lower() if lowercase else text


# ---------------------------------------------------------------------------- reward arithmetic


def best_of_samples(scores: Tensor) -> tuple[Tensor, Tensor]:
    """[P, N, S] sample scores -> (best score [P, N], index of that sample [P, N])."""
    best = scores.max(dim=-1)
    return best.values, best.indices


def input_zscore(scores: Tensor, eps: float = 1e-4) -> Tensor:
    """Standardise each input's column [P, N] across the prompts (population std, RLPrompt's
    eps): an input every prompt finds easy no longer outweighs a hard one."""
    scores = scores.float()
    mean = scores.mean(dim=0, keepdim=True)
    std = scores.std(dim=0, unbiased=False, keepdim=True)
    return (scores - mean) / (std + eps)


def tst_reward(content: Tensor, style: Tensor, zscore: bool = True) -> Tensor:
    """Per-prompt reward from [P, N, S] content and style scores (x100): mean of the two, best of
    the samples per input, z-scored per input if `zscore`, mean over inputs -> [P]."""
    best, _ = best_of_samples((content + style) / 2)
    return (input_zscore(best) if zscore else best).mean(dim=-1)


# ---------------------------------------------------------------------------- scores


def content_scores(sources: Tensor, outputs: Tensor) -> Tensor:
    """Cosine similarity of unit-length embeddings [..., D], negatives clipped to 0 -> [...]."""
    return (sources * outputs).sum(dim=-1).clamp(min=0.0)


@dataclass
class StyleClassifier:
    """Logistic regression on sentence embeddings: P(label 1) = sigmoid(x . weight + bias)."""

    weight: Tensor  # [D]
    bias: Tensor  # []
    heldout_accuracy: float | None = None

    def prob(self, embeddings: Tensor, label: int = 1) -> Tensor:
        """P(`label`) for each row of [N, D] embeddings."""
        p1 = torch.sigmoid(embeddings.float() @ self.weight + self.bias)
        return p1 if label == 1 else 1 - p1

    def accuracy(self, embeddings: Tensor, labels: Sequence[int]) -> float:
        predicted = (self.prob(embeddings) > 0.5).long()
        return (predicted == torch.tensor(labels)).float().mean().item()


def fit_style_classifier(
    embeddings: Tensor,
    labels: Sequence[int],
    steps: int = 300,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
) -> StyleClassifier:
    """Full-batch logistic regression from zero weights (deterministic: no sampling, no init)."""
    x, y = embeddings.float(), torch.tensor(labels, dtype=torch.float32)
    if set(y.tolist()) != {0.0, 1.0}:
        raise UserError("the style classifier needs sentences of both styles (labels 0 and 1)")
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y)
            loss = loss + weight_decay * weight.square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return StyleClassifier(weight.detach(), bias.detach())


def classifier_key(encoder: str, texts: Sequence[str], labels: Sequence[int], **hyper) -> str:
    """A digest naming one trained classifier (encoder, data and hyperparameters)."""
    blob = json.dumps([encoder, list(texts), list(labels), sorted(hyper.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------- evaluation


def fluency_scores(source_ppl: Sequence[float], output_ppl: Sequence[float]) -> list[float]:
    """min(1, ppl(input) / ppl(output)): 1 for a rewrite at least as fluent as the human-written
    input, less the more surprising it reads; 0 for an empty output (NaN perplexity)."""
    return [
        0.0 if math.isnan(out) or math.isnan(src) else min(1.0, src / out)
        for src, out in zip(source_ppl, output_ppl, strict=True)
    ]


def bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, 13a tokenisation) on 0..100; an example may list several
    references (shorter lists repeat their last one, which leaves BLEU unchanged)."""
    import sacrebleu

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max((len(r) for r in refs), default=1)
    streams = [[r[min(i, len(r) - 1)] for r in refs] for i in range(width)]
    return sacrebleu.corpus_bleu(list(hypotheses), streams).score


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean of values in [0, 1], clipped to [0, 1]."""
    x = torch.tensor(values, dtype=torch.float64)
    if len(x) < 2:
        return 0.0, 1.0
    half = 1.959963984540054 * x.std().item() / math.sqrt(len(x))
    return max(0.0, x.mean().item() - half), min(1.0, x.mean().item() + half)


def mean_perplexity(values: Sequence[float]) -> float:
    """Geometric mean over the non-empty texts (NaN skipped): one garbled line cannot dominate."""
    ppl = torch.tensor([p for p in values if not math.isnan(p)], dtype=torch.float64)
    return ppl.log().mean().exp().item() if len(ppl) else math.nan


def tst_summary(
    content: Sequence[float],
    style: Sequence[float],
    fluency: Sequence[float],
    output_ppl: Sequence[float],
) -> dict:
    """Aggregates of per-sentence scores in [0, 1]: means, J and the geometric mean."""
    c, s, f = (torch.tensor(v, dtype=torch.float64) for v in (content, style, fluency))
    joint = c * s * f
    return {
        "content": c.mean().item(),
        "style": s.mean().item(),
        "fluency": f.mean().item(),
        "joint": joint.mean().item(),
        "gm": (c.mean() * s.mean() * f.mean()).pow(1 / 3).item(),
        "perplexity": mean_perplexity(output_ppl),
        "per_sentence_joint": joint.tolist(),
    }
