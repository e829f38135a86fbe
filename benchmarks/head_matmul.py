"""LM-head matmul on CPU: `F.linear(h, W)` vs `head_logits` (`W @ h^T`) for few rows.

    python benchmarks/head_matmul.py [--model smollm2-135m] [--repeats 20]

Rows 4 is the APPO agent decoding 4 prompts, 16 the token policy, 64-128 last-position scoring.
Both layouts are timed in the same process, alternating, on the model's real output head.
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
import torch.nn.functional as F
from scoring import machine, revision

from stableprompt.models.compat import head_logits
from stableprompt.models.loading import load_lm


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model, _ = load_lm(args.model, dtype="float32")
    head = model.get_output_embeddings()
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(f"head {tuple(head.weight.shape)} {head.weight.dtype}")
    print("rows  F.linear ms  head_logits ms  speed-up  max |diff|")
    with torch.no_grad():
        for rows in (1, 4, 16, 64, 128):
            h = torch.randn(rows, head.weight.shape[1])
            plain = seconds(lambda h=h: F.linear(h, head.weight), args.repeats)
            ours = seconds(lambda h=h: head_logits(head, h), args.repeats)
            diff = (F.linear(h, head.weight) - head_logits(head, h)).abs().max().item()
            ms = f"{plain * 1e3:11.1f}  {ours * 1e3:14.1f}"
            print(f"{rows:4d}  {ms}  {plain / ours:7.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
