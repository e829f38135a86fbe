"""Scoring engine vs a naive scorer (RLPrompt-style), in one run on the same machine.

    python benchmarks/scoring.py [--data ../shared/data/fsc/16-shot/sst-2/16-42] [--target ...]

Workload: 16 prompts x 32 SST-2 train inputs, the sst-2 template and label words. Reported:
  - naive: one full forward per (prompt, input, class) with logits at every position, fp32;
  - engine: stableprompt's LocalScorer (shared-prefix KV reuse, batching, last-position logits)
    in the dtype `auto` picks, with an empty score cache;
  - engine, cached: the same call again (every pair is a cache hit);
  - ceiling: a plain batched forward over the same token sequences, no caching, no LM head.
Throughput is "sequence tokens per second": the tokens of all scored sequences divided by wall
time, the same numerator for every row, so ratios are ratios of wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from stableprompt.models import LocalScorer, NaiveScorer, load_lm
from stableprompt.tasks import get_task, load_kshot_dir

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "It was",
    "All in all, the movie was",
    "In summary, it was",
    "Overall the film is",
    "My rating:",
    "The review is",
    "Verdict:",
    "This movie is",
    "I thought it was",
    "Critics called it",
    "In short,",
    "Sentiment:",
    "The acting was",
    "To sum up, it was",
    "Honestly, it was",
    "The plot was",
]


# CPU flags that decide which kernels are fast: bf16 is native only with AVX512-BF16 or AMX,
# int8 matmuls gain from VNNI
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> str:
    """CPU model, threads, torch's kernel level, the CPU flags above that are present, arch."""
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    caps = torch.backends.cpu.get_cpu_capability()
    present = " ".join(f for f in FLAGS if f in flags) or "none of " + "/".join(FLAGS)
    return (
        f"{cpu}, {torch.get_num_threads()} threads, {caps}, flags: {present}, {platform.machine()}"
    )


def revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r of two 1-D tensors (0 when either is constant)."""
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm()).clamp(min=1e-12)).item()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@torch.inference_mode()
def plain_forward(model, sequences: list[list[int]], pad: int, batch: int = 64) -> None:
    for i in range(0, len(sequences), batch):
        chunk = sequences[i : i + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
        model.model(input_ids=ids, attention_mask=mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"))
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    task = get_task("sst-2")
    inputs = [ex.text for ex in load_kshot_dir(args.data)["train"][: args.inputs]]
    prompts = PROMPTS[: args.prompts]
    labels = list(task.label_words)

    engine_model, tokenizer = load_lm(args.target, dtype="auto")
    naive_model, _ = load_lm(args.target, dtype="float32")
    engine = LocalScorer(engine_model, tokenizer)
    naive = NaiveScorer(naive_model, tokenizer)

    rows = engine.build_rows(
        [(p, x) for p in prompts for x in inputs], task.template, tuple(labels)
    )
    sequences = [list(r.prefix + r.suffix) + t[-1:] for rs in rows for r in rs for t in r.targets]
    n_tokens = sum(map(len, sequences))

    engine.score(prompts[:1], inputs[:2], task.template, labels)  # warm-up, then a fresh cache
    engine.cache.store.clear()
    engine.prefix_store.clear()
    prefixes = {r.prefix for rs in rows for r in rs}
    _, t_inputs = timed(lambda: engine._encode_prefixes(prefixes))  # what only step 1 pays
    fast, t_prompts = timed(lambda: engine.score(prompts, inputs, task.template, labels))
    t_engine = t_inputs + t_prompts
    _, t_cached = timed(lambda: engine.score(prompts, inputs, task.template, labels))
    slow, t_naive = timed(lambda: naive.score(prompts, inputs, task.template, labels))
    _, t_plain = timed(lambda: plain_forward(engine_model, sequences, tokenizer.pad_token_id))

    max_diff = (fast - slow).abs().max().item()
    figures = {
        "date": datetime.date.today().isoformat(),
        "revision": revision(),
        "machine": machine(),
        "target": args.target,
        "engine_dtype": str(engine_model.dtype),
        "workload": f"{len(prompts)} prompts x {len(inputs)} inputs x {len(labels)} classes",
        "sequence_tokens": n_tokens,
        "naive_tok_s": n_tokens / t_naive,
        "engine_tok_s": n_tokens / t_engine,
        "engine_cached_tok_s": n_tokens / t_cached,
        "plain_forward_tok_s": n_tokens / t_plain,
        "naive_s": t_naive,
        "engine_inputs_s": t_inputs,
        "engine_prompts_s": t_prompts,
        "engine_s": t_engine,
        "cached_s": t_cached,
        "plain_s": t_plain,
        "engine_vs_naive": t_naive / t_engine,
        "engine_vs_plain": t_plain / t_engine,
        "max_abs_logprob_diff": max_diff,
    }
    print(f"{figures['date']}  rev {figures['revision']}  {figures['machine']}")
    print(
        f"target {args.target}, engine dtype {engine_model.dtype}; {figures['workload']}; "
        f"{n_tokens} sequence tokens"
    )
    print(f"{'scorer':<34}{'seconds':>9}{'tokens/s':>11}")
    for name, seconds in [
        ("naive (1 forward/seq, fp32)", t_naive),
        ("plain batched forward (ceiling)", t_plain),
        ("engine", t_engine),
        ("  of which: encode the inputs once", t_inputs),
        ("  of which: score the prompts", t_prompts),
        ("engine, all cached", t_cached),
    ]:
        print(f"{name:<34}{seconds:>9.2f}{n_tokens / seconds:>11.0f}")
    print(
        f"engine vs naive: {figures['engine_vs_naive']:.1f}x   engine vs plain forward: "
        f"{figures['engine_vs_plain']:.1f}x   max |logprob diff| {max_diff:.2e}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
