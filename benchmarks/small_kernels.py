"""Two small kernels the engine replaced, timed against their replacements at its real shapes.

    python benchmarks/small_kernels.py [--repeats 50]

1. Attention of the scorer's suffix batches (SmolLM2-135M: 9 query heads, 3 key/value heads,
   head dimension 64) under a boolean mask, through the two functions themselves: transformers'
   sdpa copies each key/value head once per query head (`repeat_kv`) before torch's kernel;
   `grouped_sdpa` passes them as they are (`enable_gqa`). Shapes: 128 rows of 3 suffix tokens
   over 47 keys (RLPrompt's template), 64 rows of 30 over 60 (a prompt-first template), and
   APPO's packed update row (96 over 316).
2. Drawing one token per row from a distribution over the 49,152-token vocabulary:
   `torch.multinomial` against `sample_index` (inverse CDF), at 4 rows (APPO's agent) and 16
   (sparse-sql's policy).
Prints milliseconds per call and the largest difference in the attention outputs.
"""

from __future__ import annotations

import argparse
import datetime
from types import SimpleNamespace

import torch
from head_matmul import seconds
from scoring import machine, revision
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from stableprompt.models.compat import grouped_sdpa
from stableprompt.models.sampling import sample_index

HEADS, GROUPS, DIM, VOCAB = 9, 3, 64, 49152


def attention(rows: int, queries: int, keys: int, repeats: int) -> tuple[float, float, float]:
    """(transformers' sdpa seconds, `grouped_sdpa` seconds, largest output difference)."""
    layer = SimpleNamespace(num_key_value_groups=GROUPS, is_causal=True)  # what both read
    q = torch.randn(rows, queries, HEADS, DIM).transpose(1, 2)  # as the model makes it
    k, v = (torch.randn(rows, HEADS // GROUPS, keys, DIM) for _ in range(2))
    mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries).repeat(rows, 1, 1, 1)
    mask[: rows // 2, :, :, :5] = False  # left padding in half the rows

    def copied() -> torch.Tensor:
        return sdpa_attention_forward(layer, q, k, v, mask)[0]

    def grouped() -> torch.Tensor:
        return grouped_sdpa(layer, q, k, v, mask)[0]

    diff = (copied() - grouped()).abs().max().item()
    return seconds(copied, repeats), seconds(grouped, repeats), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}\n")
    attention(128, 3, 47, args.repeats)  # warm-up: a first timing in a fresh process runs slow
    print("| attention under a mask | repeat_kv ms | enable_gqa ms | ratio | max diff |")
    print("|---|---:|---:|---:|---:|")
    for rows, queries, keys in ((128, 3, 47), (64, 30, 60), (1, 96, 316)):
        copied, grouped, diff = attention(rows, queries, keys, args.repeats)
        shape = f"{rows} rows x {queries} queries over {keys} keys"
        print(
            f"| {shape} | {copied * 1e3:.2f} | {grouped * 1e3:.2f} | {copied / grouped:.2f}x | "
            f"{diff:.1e} |"
        )
    print("\n| one draw per row over the vocabulary | multinomial ms | sample_index ms | ratio |")
    print("|---|---:|---:|---:|")
    for rows in (4, 16):
        probs = torch.softmax(torch.randn(rows, VOCAB) * 3, dim=-1)
        slow = seconds(lambda p=probs: torch.multinomial(p, 1), args.repeats)
        fast = seconds(lambda p=probs: sample_index(p), args.repeats)
        print(f"| {rows} rows | {slow * 1e3:.2f} | {fast * 1e3:.2f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()
