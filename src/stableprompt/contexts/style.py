"""Text style transfer tasks (RLPrompt section 3.3): the task context the trainer and the token
policy algorithms use, and its builder.

`StyleTransferContext` implements `contexts.base.TaskContext`, so `Trainer`, `sql` and
`sparse-sql` run on it unchanged. The target
writes `num_samples` rewrites per (prompt, input) by top-k sampling, reproducible by seed and
cached; `stableprompt.tasks.style` scores them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stableprompt.config import STYLE_TRAIN_EXAMPLES
from stableprompt.contexts.base import TaskContext, pick
from stableprompt.errors import UserError
from stableprompt.models import build_scorer
from stableprompt.models.encoders import DEFAULT_ENCODER, SentenceEncoder
from stableprompt.models.loading import cache_dir, load_lm
from stableprompt.models.scoring import TargetScorer
from stableprompt.naturalness import prompt_perplexity
from stableprompt.tasks import get_task
from stableprompt.tasks.data import Example, Splits, data_root
from stableprompt.tasks.registry import TaskSpec, check_template, fill_template
from stableprompt.tasks.style import (
    OUTPUT_STOPS,
    StyleClassifier,
    best_of_samples,
    bleu,
    classifier_key,
    clean_output,
    content_scores,
    fit_style_classifier,
    fluency_scores,
    mean_ci95,
    mean_perplexity,
    tst_reward,
    tst_summary,
)
from stableprompt.tasks.style_data import StyleData, load_style_data

DEFAULT_FLUENCY_LM = "smollm2-135m"  # for targets without local weights (remote servers)


@dataclass(frozen=True)
class StyleTask:
    """Where a registered style transfer task's data lives and which way it transfers."""

    name: str
    data: str  # default --data, relative to the data root ($STABLEPROMPT_DATA)
    source_label: int
    target_label: int
    lowercase: bool = False  # Yelp's files are lower-cased; so are the outputs (RLPrompt too)


STYLE_TASKS: dict[str, StyleTask] = {
    t.name: t
    for t in (
        StyleTask("yelp-negative-to-positive", "tst/yelp/clean", 0, 1, lowercase=True),
        StyleTask("yelp-positive-to-negative", "tst/yelp/clean", 1, 0, lowercase=True),
        # label 0 is Shakespearean in the shared files: modern (1) -> Shakespearean (0)
        StyleTask("shakespeare", "tst/shakespeare/100-shot/100-13", 1, 0),
    )
}


@dataclass
class SamplingSettings:
    """How the target writes rewrites and how evaluation picks and ranks them."""

    num_samples: int = 4  # rewrites per (prompt, input) while training
    eval_samples: int | None = None  # rewrites per input at evaluation (default num_samples)
    top_k: int | None = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0
    select_by: str = "joint"  # dev selection and report "accuracy": joint | mean


@dataclass
class Evaluation:
    """One prompt's rewrites of a split, chosen best of samples, and their scores."""

    outputs: list[str]
    content: list[float]  # [0, 1] per sentence
    style_prob: list[float]
    style: list[float]  # 1 if the classifier says target style
    fluency: list[float]
    output_ppl: list[float]
    source_ppl: list[float]
    summary: dict = field(default_factory=dict)


class StyleTransferContext(TaskContext):
    """Task context for text style transfer."""

    generation = False  # no label words and no single reference answer
    label_search = None  # no label words to choose

    def __init__(
        self,
        task: TaskSpec,
        style: StyleTask,
        splits: Splits,
        scorer: TargetScorer,
        encoder: SentenceEncoder,
        classifier: StyleClassifier,
        template: str | None = None,
        settings: SamplingSettings | None = None,
        fluency_lm: str | tuple | None = None,
        required: tuple[str, ...] = ("train", "dev"),
    ):
        for split in required:
            if not splits.get(split):
                raise UserError(f"the {split} split of {task.name} is empty (check --data)")
        self.task, self.style, self.splits, self.scorer = task, style, splits, scorer
        self.encoder, self.classifier = encoder, classifier
        self.template = check_template(template or task.template)
        self.settings = settings or SamplingSettings()
        if self.settings.select_by not in ("joint", "mean"):
            raise UserError(f"select_by must be joint or mean, not {self.settings.select_by!r}")
        self.label_words: list[str] = []
        self._fluency_lm = fluency_lm
        self._ppl: dict[str, float] = {}
        self.raw_rewards: Tensor | None = None  # per prompt, of the last `rewards` call (0..100)

    # -- generation and scoring --------------------------------------------------------------

    def rewrites(self, prompts: list[str], examples: list[Example], n: int) -> list[list[str]]:
        """[P * N] rows of `n` cleaned rewrites (prompt-major), one batched sampling call."""
        s = self.settings
        texts = [fill_template(self.template, p, ex.text) for p in prompts for ex in examples]
        rows = self.scorer.sample(
            texts, s.max_new_tokens, OUTPUT_STOPS, n, s.top_k, s.temperature, s.seed
        )
        return [[clean_output(o, self.style.lowercase) for o in row] for row in rows]

    def score_rewrites(
        self, examples: list[Example], rows: list[list[str]]
    ) -> tuple[Tensor, Tensor]:
        """Content and style (x100) of every rewrite -> two [P, N, S] tensors."""
        n_inputs, n_samples = len(examples), len(rows[0])
        flat = [o for row in rows for o in row]
        sources = self.encoder.encode([ex.text for ex in examples])
        outputs = self.encoder.encode(flat)
        shape = (-1, n_inputs, n_samples)
        content = content_scores(sources[None, :, None], outputs.view(*shape, outputs.shape[-1]))
        style = self.classifier.prob(outputs, self.style.target_label).view(shape)
        empty = torch.tensor([not o for o in flat]).view(shape)  # nothing was transferred
        return 100 * content.masked_fill(empty, 0.0), 100 * style.masked_fill(empty, 0.0)

    def rewards(
        self,
        prompts: list[str],
        examples: list[Example],
        kind: str = "rlprompt",
        keep: Tensor | None = None,
    ) -> Tensor:
        """Reward per prompt: RLPrompt's input-level z-scored best-of-samples mean of content and
        style (`rlprompt`, and `worst-class`, a classification setting that does not apply here);
        the same unnormalised on 0..100 (`raw`) or 0..10 (`appo`)."""
        if kind not in ("rlprompt", "worst-class", "raw", "appo"):
            raise ValueError(f"unknown reward kind {kind!r}")
        if keep is not None:  # the reward is z-scored per input: no pair can leave it
            raise ValueError("style transfer rewards every prompt on every input (no `keep`)")
        rows = self.rewrites(prompts, examples, self.settings.num_samples)
        content, style = self.score_rewrites(examples, rows)
        # The z-scored reward averages ~0 at every step by construction; the trainer logs this
        # one (reward_metrics: reward_raw_mean) so that progress shows.
        self.raw_rewards = tst_reward(content, style, zscore=False)
        if kind in ("rlprompt", "worst-class"):
            return tst_reward(content, style, zscore=True)
        return self.raw_rewards / 10 if kind == "appo" else self.raw_rewards

    def reward_metrics(self) -> dict[str, float]:
        """The last reward call's raw (0..100) mean and max, then forgotten."""
        raw, self.raw_rewards = self.raw_rewards, None
        if raw is None:
            return {}
        return {"reward_raw_mean": raw.mean().item(), "reward_raw_max": raw.max().item()}

    # -- evaluation --------------------------------------------------------------------------

    def perplexity(self, texts: list[str]) -> list[float]:
        """Perplexity of each text under the fluency LM (cached; NaN for empty text)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ppl))
        if missing:
            model, tokenizer = self.fluency_model()
            self._ppl.update(zip(missing, prompt_perplexity(missing, model, tokenizer)))
        return [self._ppl[t] for t in texts]

    def fluency_model(self) -> tuple:
        """(model, tokenizer) that judges fluency: as given, else the target's own weights."""
        if isinstance(self._fluency_lm, tuple):
            return self._fluency_lm
        if self._fluency_lm is None and hasattr(self.scorer, "model"):
            self._fluency_lm = (self.scorer.model, self.scorer.tokenizer)
        else:
            self._fluency_lm = load_lm(self._fluency_lm or DEFAULT_FLUENCY_LM, shared=True)
        return self._fluency_lm

    def evaluations(self, prompts: list[str], examples: list[Example]) -> list[Evaluation]:
        """Per prompt: the best of `eval_samples` rewrites per input (by the training reward, as
        RLPrompt picks its outputs) with content, style and fluency."""
        n = self.settings.eval_samples or self.settings.num_samples
        rows = self.rewrites(prompts, examples, n)
        content, style = self.score_rewrites(examples, rows)
        _, pick = best_of_samples((content + style) / 2)
        source_ppl = self.perplexity([ex.text for ex in examples])
        results = []
        for p in range(len(prompts)):
            idx = pick[p]
            chosen = [rows[p * len(examples) + i][int(k)] for i, k in enumerate(idx)]
            c = (content[p].gather(-1, idx[:, None]).squeeze(-1) / 100).tolist()
            prob = (style[p].gather(-1, idx[:, None]).squeeze(-1) / 100).tolist()
            hard = [float(x > 0.5) for x in prob]
            ppl = self.perplexity(chosen)
            fluency = fluency_scores(source_ppl, ppl)
            ev = Evaluation(chosen, c, prob, hard, fluency, ppl, source_ppl)
            ev.summary = tst_summary(c, hard, fluency, ppl)
            results.append(ev)
        return results

    def _selection_scores(self, ev: Evaluation) -> list[float]:
        if self.settings.select_by == "joint":
            return ev.summary["per_sentence_joint"]
        return [(c + s) / 2 for c, s in zip(ev.content, ev.style_prob, strict=True)]

    @property
    def metric(self) -> str:
        return "joint" if self.settings.select_by == "joint" else "content_style_mean"

    def example_scores(
        self,
        prompts: list[str],
        split: str,
        label_words: list[str] | None = None,
        rows: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """[prompts, inputs] dev-selection score: the joint score J of each input's rewrite (or
        the mean of its content and style)."""
        evaluations = self.evaluations(prompts, pick(self.splits[split], rows))
        return torch.tensor([self._selection_scores(ev) for ev in evaluations])

    def report(self, prompt: str, split: str, label_words: list[str] | None = None) -> dict:
        """The selection score as "accuracy" (with a normal 95% interval) and every TST metric:
        content, style (classifier accuracy), style_prob, fluency, joint, gm, perplexity and,
        where the split has references, BLEU (0..100); self_bleu is BLEU against the inputs."""
        examples = self.splits[split]
        ev = self.evaluations([prompt], examples)[0]
        values = self._selection_scores(ev)
        summary = {k: v for k, v in ev.summary.items() if k != "per_sentence_joint"}
        report = {
            "accuracy": sum(values) / len(values),
            "ci95": mean_ci95(values),
            "n": len(examples),
            "per_class_recall": [],
            "select_by": self.settings.select_by,
            **summary,
            "style_prob": sum(ev.style_prob) / len(ev.style_prob),
            "source_perplexity": mean_perplexity(ev.source_ppl),
            "self_bleu": bleu(ev.outputs, [ex.text for ex in examples]),
            "style_classifier_accuracy": self.classifier.heldout_accuracy,
            "outputs": ev.outputs,
        }
        if all(ex.target is not None for ex in examples):
            report["bleu"] = bleu(ev.outputs, [ex.target for ex in examples])
        return report


# ------------------------------------------------------------------------------ builder


def train_style_classifier(
    encoder: SentenceEncoder, encoder_name: str, data: StyleData, steps: int = 300
) -> StyleClassifier:
    """The task's style classifier, trained once per (encoder, sentences) and cached as JSON."""
    texts = [ex.text for ex in data.style_train]
    labels = [ex.label for ex in data.style_train]
    path = (
        cache_dir() / "style" / f"{classifier_key(encoder_name, texts, labels, steps=steps)}.json"
    )
    if path.is_file():
        saved = json.loads(path.read_text())
        return StyleClassifier(
            torch.tensor(saved["weight"]), torch.tensor(saved["bias"]), saved["heldout_accuracy"]
        )
    classifier = fit_style_classifier(encoder.encode(texts), labels, steps=steps)
    heldout = data.style_heldout
    if heldout:
        embeddings = encoder.encode([ex.text for ex in heldout])
        classifier.heldout_accuracy = classifier.accuracy(embeddings, [ex.label for ex in heldout])
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "weight": classifier.weight.tolist(),
        "bias": classifier.bias.item(),
        "heldout_accuracy": classifier.heldout_accuracy,
    }
    path.write_text(json.dumps(saved))
    return classifier


def settings_from(config) -> SamplingSettings:
    """Sampling settings from a TrainConfig's `extra` mapping (YAML `extra:` keys)."""
    extra = config.extra
    return SamplingSettings(
        num_samples=int(extra.get("num_samples", 4)),
        eval_samples=extra.get("eval_samples"),
        top_k=extra.get("sample_top_k", 10),
        temperature=float(extra.get("temperature", 1.0)),
        max_new_tokens=int(extra.get("output_tokens", 32)),
        seed=config.seed,
        select_by=str(extra.get("select_by", "joint")),
    )


def build_style_context(
    config, required: tuple[str, ...] = ("train", "dev"), scorer: TargetScorer | None = None
) -> StyleTransferContext:
    """Data, target, encoder and style classifier for a registered style transfer task.

    `config` is a `TrainConfig` (task, data, target, dtype, template, seed, extra). When it leaves
    `train_examples` open, it is set to 8 inputs per step: every step scoring all train inputs
    would be far too slow, and RLPrompt also trains on small batches of inputs.
    """
    if config.task not in STYLE_TASKS:
        raise UserError(f"{config.task!r} is not a style transfer task ({', '.join(STYLE_TASKS)})")
    style, extra = STYLE_TASKS[config.task], config.extra
    sizes = {k: int(extra[k]) for k in ("train_size", "dev_size", "style_size") if k in extra}
    data = load_style_data(config.data or data_root() / style.data, style.source_label, **sizes)
    encoder_name = str(extra.get("encoder", DEFAULT_ENCODER))
    encoder = SentenceEncoder.load(encoder_name)
    classifier = train_style_classifier(encoder, encoder_name, data)
    if classifier.heldout_accuracy is not None:
        print(f"style classifier held-out accuracy {classifier.heldout_accuracy:.3f}")
    if config.train_examples is None:
        config.train_examples = STYLE_TRAIN_EXAMPLES
    return StyleTransferContext(
        get_task(config.task),
        style,
        data.splits,
        scorer or build_scorer(config.target, config.dtype),
        encoder,
        classifier,
        template=config.template,
        settings=settings_from(config),
        fluency_lm=extra.get("fluency_lm"),
        required=required,
    )


__all__ = [
    "STYLE_TASKS",
    "SamplingSettings",
    "StyleTask",
    "StyleTransferContext",
    "build_style_context",
    "train_style_classifier",
]
