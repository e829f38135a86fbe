"""The machine's peaks at the engine's real shapes, and how close the engine comes to them.

    python benchmarks/roofline.py [--model smollm2-135m] [--repeats 5] [--dtype auto]

Part 1, kernel peaks on this CPU (one process, nothing else should run): memory copy bandwidth;
matmul throughput of every transformer-block weight of the model, in fp32, bf16, int8 (torch's
dynamic int8 linear layers, as `--dtype int8` uses) and weight-only int8 (int8 weights, fp32
activations: torch's `_weight_int8pack_mm`, not used by the library), at two shapes: the scorer's
prefill shape (`--rows` rows of suffix tokens at once) and the agent's 4-row decoding shape, there
in the faster of `F.linear` and the `W @ x^T` layout the agents decode with (`few_row_linears`);
the decode shape is also given as weight bytes read per second, since a few rows are bound by
memory.

Part 2, the engine against those peaks, in the dtype `--dtype` resolves to (auto: what a run
here uses): the scoring engine on 16 prompts x 32 SST-2 inputs (the inputs encoded beforehand, as
every step after a run's first), counted as 2 FLOPs per block parameter per suffix token plus the
LM head at the label positions, as a share of that dtype's prefill peak; one real 4-row decoding
step of the model (under `few_row_linears`, into the agent's preallocated cache, as the agents
decode), as a share of its decode peak;
and one PPO epoch of the APPO agent on a real rollout (4 prompts of up to 32 tokens written for
SST-2), counted as 4 FLOPs per block and LM-head parameter per response token (the forward, and
the backward to the activations: the frozen weights get no gradient; LoRA's few are left out),
as a share of the peak measured at its own number of rows. Last, where the decoding step's time
goes (torch's profiler: matrix products, attention, every other operator), since it is the part
furthest from its peak.
Prints a markdown table with the date, the CPU flags and the git revision.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from head_matmul import seconds
from scoring import PROMPTS, ROOT, machine, revision

from stableprompt.agents.instruction_agent import repeat_cache
from stableprompt.algorithms import build_algorithm
from stableprompt.algorithms.ppo import ppo_loss
from stableprompt.config import TrainConfig
from stableprompt.contexts import build_context
from stableprompt.models import LocalScorer
from stableprompt.models.compat import FEW_ROWS, cache_kwarg, few_row_linears, output_cache
from stableprompt.models.loading import dtype_name, load_lm
from stableprompt.tasks import get_task, load_kshot_dir


def block_linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)]


def int8_layers(linears: list[torch.nn.Linear]) -> list[torch.nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [DynamicLinear.from_float(_with_qconfig(lin)) for lin in linears]


def _with_qconfig(lin: torch.nn.Linear) -> torch.nn.Linear:
    from torch.ao.quantization import default_dynamic_qconfig

    lin.qconfig = default_dynamic_qconfig
    return lin


class WeightOnlyInt8(torch.nn.Module):
    """A linear layer with int8 weights (one scale per output row) and fp32 activations, through
    torch's `_weight_int8pack_mm`: a quarter of fp32's weight bytes, which is what a memory-bound
    few-row decode reads; the activations are not quantized (dynamic int8's drift, BENCHMARKS)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        self.scales = weight.abs().amax(1).clamp(min=1e-12) / 127
        self.weight = torch.round(weight / self.scales[:, None]).to(torch.int8)
        self.in_features = linear.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)


def matmul_pass(layers, rows: int, dtype: torch.dtype, repeats: int) -> float:
    """Seconds for one pass of `rows` input rows through every layer."""
    inputs = {}
    for layer in layers:
        k = layer.in_features
        inputs.setdefault(k, torch.randn(rows, k, dtype=dtype))
    if isinstance(layers[0], torch.nn.Linear):
        weights = [layer.weight.detach().to(dtype) for layer in layers]
        took = seconds(lambda: [F.linear(inputs[w.shape[1]], w) for w in weights], repeats)
        if rows <= FEW_ROWS:  # the layout decoding uses (`few_row_linears`), if it is faster
            flipped = seconds(lambda: [w @ inputs[w.shape[1]].T for w in weights], repeats)
            took = min(took, flipped)
        return took
    return seconds(lambda: [layer(inputs[layer.in_features]) for layer in layers], repeats)


def engine_scoring(model, tokenizer, repeats: int) -> tuple[float, float]:
    """(seconds, FLOPs) of scoring 16 prompts x 32 inputs on inputs already encoded."""
    train = load_kshot_dir(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42")["train"]
    texts = [ex.text for ex in train]
    task = get_task("sst-2")
    scorer = LocalScorer(model, tokenizer)
    scorer.score(["warm up"], texts, task.template, list(task.label_words))  # encodes inputs
    pairs = [(p, t) for p in PROMPTS for t in texts]
    rows = scorer.build_rows(pairs, task.template, task.label_words)
    suffix_tokens = sum(len(r.suffix) for rs in rows for r in rs)
    heads = sum(len(r.targets) for rs in rows for r in rs)  # label positions through the head
    params = sum(lin.weight.numel() for lin in block_linears(model))
    vocab, hidden = model.get_output_embeddings().weight.shape
    flops = 2 * params * suffix_tokens + 2 * vocab * hidden * heads
    took = 0.0
    for _ in range(repeats):
        scorer.cache.store.clear()  # score, do not read the cache; the prefix store stays
        start = time.perf_counter()
        scorer.score(PROMPTS, texts, task.template, list(task.label_words))
        took += time.perf_counter() - start
    return took / repeats, flops


def decode_step(model, rows: int, repeats: int) -> tuple[float, dict[str, tuple[float, int]]]:
    """One token for `rows` rows after a 220-token context, in the cache the agents decode in
    (`repeat_cache`: preallocated room, written in place), rewound after each step."""
    decoder = model.model
    context = torch.randint(0, model.config.vocab_size, (1, 220))
    cache = repeat_cache(output_cache(decoder(input_ids=context, use_cache=True)), rows, room=1)
    token = torch.zeros(rows, 1, dtype=torch.long)

    def step() -> None:
        decoder(input_ids=token, use_cache=True, **cache_kwarg(decoder, cache))
        for layer in cache.layers:  # back to the context alone
            layer.length = context.shape[1]
            layer.keys = layer.key_buffer[:, :, : layer.length]
            layer.values = layer.value_buffer[:, :, : layer.length]

    with few_row_linears(model):  # as the agents decode
        took = seconds(step, repeats)
        with torch.profiler.profile() as prof:
            for _ in range(repeats):
                step()
    return took, time_by_kind(prof, repeats)


def time_by_kind(prof, steps: int) -> dict[str, tuple[float, int]]:
    """A profile's self time per step (ms) and operator calls per step: matrix products,
    attention, and everything else (norms, rotary embeddings, views, copies, the cache)."""
    kinds = {"matmul": [0.0, 0], "attention": [0.0, 0], "other": [0.0, 0]}
    for event in prof.key_averages():
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            kind = "matmul"
        elif "scaled_dot_product" in event.key:
            kind = "attention"
        else:
            kind = "other"
        kinds[kind][0] += event.self_cpu_time_total / 1e3 / steps
        kinds[kind][1] += event.count // steps
    return {k: (ms, calls) for k, (ms, calls) in kinds.items()}


def appo_agent(model_name: str, dtype: str):
    """The APPO algorithm as `train` builds it for SST-2 16-42 (32 new tokens)."""
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            algo="appo",
            task="sst-2",
            data=str(ROOT.parent / "shared/data/fsc/16-shot/sst-2/16-42"),
            agent=model_name,
            target=model_name,
            dtype=dtype,
            label_words="task",
            max_new_tokens=32,
            out=out,
        )
        return build_algorithm(config, build_context(config))


def ppo_epoch_seconds(algo, query, samples, repeats: int, packed: bool = True) -> float:
    """Seconds of one PPO epoch on a rollout: the response tokens' forward over the meta-prompt's
    cached keys/values (rows packed into one sequence, as `train_step` runs it, or padded to the
    longest), the clipped loss, the backward into LoRA and the value head, the optimizer step."""
    agent, mask = algo.agent, samples.mask
    advantages = torch.randn_like(samples.values)  # any advantages: the arithmetic is the same

    def epoch() -> None:
        logprobs, values = agent.forward_logprobs_values(
            query, samples.response, mask=mask if packed else None
        )
        old_logprobs, old_values = samples.logprobs, samples.values
        loss, _ = ppo_loss(logprobs, old_logprobs, advantages, values, old_values, old_values, mask)
        algo.optimizer.zero_grad()
        loss.backward()
        algo.optimizer.step()

    agent.train()
    took = seconds(epoch, repeats)
    agent.eval()
    return took


def ppo_update(model_name: str, dtype: str, repeats: int) -> tuple[float, float, int]:
    """(seconds, FLOPs, token rows) of one PPO epoch of the APPO agent on a real rollout."""
    algo = appo_agent(model_name, dtype)
    query, samples, _ = algo.rollout()
    took = ppo_epoch_seconds(algo, query, samples, repeats)
    rows = int(samples.mask.sum())  # packed: only the generated tokens run
    agent = algo.agent
    vocab, hidden = agent.head.weight.shape
    base = agent.lm.get_base_model().model.named_modules()
    linears = [m for name, m in base if isinstance(m, torch.nn.Linear) and "lora_" not in name]
    params = sum(lin.weight.numel() for lin in linears)
    return took, 4 * (params + vocab * hidden) * rows, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=512, help="prefill rows (suffix tokens)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="auto", help="engine dtype: auto, float32, bfloat16")
    args = parser.parse_args()
    engine = dtype_name(args.dtype)
    if engine not in ("float32", "bfloat16"):
        parser.error(f"--dtype {args.dtype}: the engine parts are measured in float32 or bfloat16")
    peak_of = {"float32": "fp32", "bfloat16": "bf16"}[engine]
    model, tokenizer = load_lm(args.model, dtype="float32")
    linears = block_linears(model)
    params = sum(lin.weight.numel() for lin in linears)

    source, target = torch.empty(2**27), torch.empty(2**27)
    copy = seconds(lambda: target.copy_(source), args.repeats)
    read_bw = source.numel() * 4 / copy  # a copy reads and writes this many bytes per second
    with torch.no_grad():
        kernels = {  # name: layers, activation dtype, weight bytes, prefill repeats
            "fp32": (linears, torch.float32, 4, args.repeats),
            "bf16": (linears, torch.bfloat16, 2, args.repeats),
            "int8": (int8_layers(linears), torch.float32, 1, args.repeats),
            # slow at the prefill shape where the kernel is not vectorised (AVX2): time it once
            "int8 weight-only": ([WeightOnlyInt8(lin) for lin in linears], torch.float32, 1, 1),
        }
        peaks = {}
        for name, (layers, dtype, nbytes, prefill_repeats) in kernels.items():
            prefill = matmul_pass(layers, args.rows, dtype, prefill_repeats)
            decode = matmul_pass(layers, 4, dtype, args.repeats * 4)
            peaks[name] = {
                "prefill_gflops": 2 * params * args.rows / prefill / 1e9,
                "decode_gflops": 2 * params * 4 / decode / 1e9,
                "decode_gbs": params * nbytes / decode / 1e9,
            }
        if engine != "float32":
            model, tokenizer = load_lm(args.model, dtype=engine)
        score_s, score_flops = engine_scoring(model, tokenizer, args.repeats)
        step_s, decode_kinds = decode_step(model, 4, args.repeats * 4)
    update_s, update_flops, update_rows = ppo_update(args.model, engine, args.repeats)
    with torch.no_grad():
        dtype = kernels[peak_of][1]
        update_peak = 2 * params * update_rows / matmul_pass(linears, update_rows, dtype, 5)

    print(f"{datetime.date.today()}  rev {revision()}  {machine()}")
    print(f"{args.model}: {len(linears)} block weight matrices, {params / 1e6:.1f} M parameters")
    print(
        f"memory: {read_bw / 1e9:.1f} GB/s copied (read and written; a 512 MiB fp32 tensor), so "
        f"reading all fp32 block weights once takes at least {params * 4 / read_bw * 1e3:.1f} ms\n"
    )
    print(
        f"| kernel | prefill ({args.rows} rows) GFLOP/s | decode (4 rows) GFLOP/s | "
        "decode weight bytes GB/s |"
    )
    print("|---|---:|---:|---:|")
    for name, p in peaks.items():
        print(
            f"| {name} linear | {p['prefill_gflops']:.1f} | {p['decode_gflops']:.2f} | "
            f"{p['decode_gbs']:.1f} |"
        )
    achieved = score_flops / score_s / 1e9
    decode_gflops = 2 * params * 4 / step_s / 1e9
    print()
    print(
        f"| engine part ({peak_of}) | achieved GFLOP/s | share of the {peak_of} peak at its shape |"
    )
    print("|---|---:|---:|")
    print(
        f"| scoring 16 prompts x 32 inputs ({score_s:.2f} s) | {achieved:.1f} | "
        f"{achieved / peaks[peak_of]['prefill_gflops']:.0%} |"
    )
    print(
        f"| one 4-row decoding step, 220-token context ({step_s * 1e3:.1f} ms) | "
        f"{decode_gflops:.2f} | {decode_gflops / peaks[peak_of]['decode_gflops']:.0%} |"
    )
    achieved = update_flops / update_s / 1e9
    matmul_at_peak = 2 * params * 4 / (peaks[peak_of]["decode_gflops"] * 1e9) * 1e3
    profiled = sum(ms for ms, _ in decode_kinds.values())
    where = ", ".join(
        f"{kind} {ms:.1f} ms ({ms / profiled:.0%}; {calls} operator calls, nested ones counted)"
        for kind, (ms, calls) in decode_kinds.items()
    )
    print(
        f"| one APPO PPO epoch, {update_rows} response-token rows ({update_s:.2f} s) | "
        f"{achieved:.1f} | {achieved / (update_peak / 1e9):.0%} (peak at {update_rows} rows: "
        f"{update_peak / 1e9:.1f}) |"
    )
    print(
        f"\nthe decoding step under torch's profiler, self time a step: {where}; "
        f"the block matmuls at the decode peak would take {matmul_at_peak:.1f} ms"
    )


if __name__ == "__main__":
    main()
