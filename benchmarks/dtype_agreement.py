"""A dtype against fp32 on real data: do the target's answers and rewards stay the same?

    python benchmarks/dtype_agreement.py [--dtype int8|bfloat16] [--prompts 4] [--data <dir>]

Scores the first N prompts of benchmarks/scoring.py on SST-2 dev and test (label words " bad" /
" good") with smollm2-135m in fp32 and in `--dtype` (default int8), one process, each with an
empty score cache, and prints: the share of (prompt, sentence) pairs whose predicted label
agrees, the max and mean absolute difference of the label log-probabilities, the largest
difference in any prompt's accuracy, and each dtype's wall time (so their ratio is from one
run), with the machine's CPU flags, the date and the git revision.
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
from scoring import PROMPTS, ROOT, machine, revision

from stableprompt.models import LocalScorer, load_lm
from stableprompt.tasks import get_task, load_kshot_dir

WORDS = [" bad", " good"]


def score(model_name: str, dtype: str, prompts: list[str], texts: list[str], template: str):
    model, tokenizer = load_lm(model_name, dtype=dtype, check_int8=False)  # measure, not refuse
    scorer = LocalScorer(model, tokenizer)
    started = time.perf_counter()
    logprobs = scorer.score(prompts, texts, template, WORDS)
    return logprobs, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--dtype", default="int8", choices=("int8", "bfloat16", "float16"))
    args = parser.parse_args()

    splits = load_kshot_dir(args.data)
    examples = splits["dev"] + splits["test"]
    texts, labels = [ex.text for ex in examples], torch.tensor([ex.label for ex in examples])
    prompts = PROMPTS[: args.prompts]
    template = get_task("sst-2").template
    fp32, t32 = score(args.model, "float32", prompts, texts, template)
    other, t_other = score(args.model, args.dtype, prompts, texts, template)
    name = {"bfloat16": "bf16", "float16": "fp16"}.get(args.dtype, args.dtype)

    agree = (fp32.argmax(-1) == other.argmax(-1)).float().mean().item()
    diff = (fp32 - other.float()).abs()
    acc32 = (fp32.argmax(-1) == labels).float().mean(-1)
    acc_other = (other.argmax(-1) == labels).float().mean(-1)
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(
        f"{len(prompts)} prompts x {len(texts)} SST-2 dev+test sentences, label words "
        f"{[w.strip() for w in WORDS]}"
    )
    print(f"predicted label agrees: {agree:.4f}")
    print(f"label log-prob |fp32 - {name}|: max {diff.max():.4f}, mean {diff.mean():.4f} nats")
    print(f"largest accuracy change of a prompt: {(acc32 - acc_other).abs().max():.4f}")
    for p, a, b in zip(prompts, acc32.tolist(), acc_other.tolist()):
        print(f"  {p!r:<32} accuracy fp32 {a:.4f}  {name} {b:.4f}")
    print(f"wall time: fp32 {t32:.1f} s, {name} {t_other:.1f} s ({t32 / t_other:.2f}x)")


if __name__ == "__main__":
    main()
