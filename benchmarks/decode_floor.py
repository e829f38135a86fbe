"""What one decoding step of a 4-row batch costs at least on this CPU, and what it costs.

    python benchmarks/decode_floor.py [--model smollm2-135m] [--rows 4] [--repeats 10]

Decoding a few rows reads every weight once per token, so it is bound by memory bandwidth, not
arithmetic. This prints, in one process: the machine's copy bandwidth (a 512 MiB tensor copy), one
pass of `F.linear` over all of the model's weight matrices with `rows` input rows in fp32, bf16
and fp16 (the matmul work of one decoding step) and in fp32 as `W @ x^T` (the layout of
`few_row_linears`), one real decoding step of the model (4 rows, a 220-token KV cache, as APPO's
agent decodes) plain and under `few_row_linears`, then the APPO agent's own sampling per token
(LoRA, value head, sampling over the vocabulary) with the adapter on and off, on a meta-prompt
of 5 SST-2 train pairs. The weights, 4 bytes each in fp32, are read from memory at every pass
since they do not fit in the cache.
"""

from __future__ import annotations

import argparse
import datetime
import random
import time

import torch
import torch.nn.functional as F
from head_matmul import seconds
from scoring import ROOT, machine, revision

from stableprompt.agents.instruction_agent import InstructionAgent
from stableprompt.models.compat import cache_kwarg, head_logits, output_cache

try:
    from stableprompt.models.compat import few_row_linears
except ImportError:  # a library older than it (benchmarks/ab.sh's base side)
    few_row_linears = None
from stableprompt.models.loading import load_lm
from stableprompt.tasks import get_task, load_kshot_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    model, _ = load_lm(args.model, dtype="float32")
    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")

    source, target = torch.empty(2**27), torch.empty(2**27)
    copy = seconds(lambda: target.copy_(source), args.repeats)
    bandwidth = 2 * source.numel() * 4 / copy  # bytes read + written
    print(f"memory copy: {bandwidth / 1e9:.1f} GB/s (read + write)")

    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    params = sum(w.numel() for w in weights)
    print(f"{len(weights)} weight matrices, {params / 1e6:.0f} M parameters (head included)")
    print("dtype      bytes MB  linear pass ms  effective GB/s  floor at copy bandwidth ms")
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            cast = [w.to(dtype) for w in weights]
            inputs = {w.shape[1]: torch.randn(args.rows, w.shape[1], dtype=dtype) for w in cast}
            nbytes = params * cast[0].element_size()
            passes = {
                str(dtype)[6:]: lambda c=cast, x=inputs: [F.linear(x[w.shape[1]], w) for w in c]
            }
            if dtype == torch.float32:  # the layout of head_logits and few_row_linears
                passes["fp32 W@x^T"] = lambda c=cast, x=inputs: [w @ x[w.shape[1]].T for w in c]
            for name, one_pass in passes.items():
                took = seconds(one_pass, 3)
                floor = nbytes / (bandwidth / 2)  # reading only: half of a copy's traffic
                print(
                    f"{name:9s}  {nbytes / 1e6:8.0f}  {took * 1e3:14.1f}  "
                    f"{nbytes / took / 1e9:14.1f}  {floor * 1e3:26.1f}"
                )
            del cast

        decoder = model.model
        context = torch.randint(0, model.config.vocab_size, (1, 220))
        cache = output_cache(decoder(input_ids=context, use_cache=True))
        cache.batch_repeat_interleave(args.rows)
        token = torch.zeros(args.rows, 1, dtype=torch.long)

        def step() -> None:
            out = decoder(input_ids=token, use_cache=True, **cache_kwarg(decoder, cache))
            head_logits(model.get_output_embeddings(), out.last_hidden_state[:, -1])
            output_cache(out).crop(-1)  # drop the new token: every step sees the same context

        took = seconds(step, args.repeats)
        print(f"one fp32 decoding step of the model, {args.rows} rows: {took * 1e3:.1f} ms")
        if few_row_linears is not None:
            with few_row_linears(model):
                took = seconds(step, args.repeats)
            print(f"  the same with few_row_linears (W @ x^T): {took * 1e3:.1f} ms")
    agent_sampling(args)


def agent_sampling(args) -> None:
    """Milliseconds per decoded token of InstructionAgent.sample, adapter on and off."""
    lm, tokenizer = load_lm(args.model, dtype="float32", shared=False)
    agent = InstructionAgent(lm, tokenizer, label_words=list(get_task("sst-2").label_words))
    train = load_kshot_dir(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42")["train"]
    query = agent.encode_query(agent.meta_prompt(random.Random(0).sample(train, 5), 5))
    for name, adapter in (("LoRA on", True), ("LoRA off", False)):
        torch.manual_seed(0)
        tokens = elapsed = 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            if adapter:
                samples = agent.sample(query, args.rows, 32)
            else:
                with agent.lm.disable_adapter():
                    samples = agent.sample(query, args.rows, 32)
            elapsed += time.perf_counter() - start
            tokens += samples.response.shape[1]  # decoding steps (until the last row stops)
        print(
            f"agent sampling, {args.rows} rows, {name}: {elapsed / tokens * 1e3:.1f} ms per token"
        )


if __name__ == "__main__":
    main()
