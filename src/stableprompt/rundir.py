"""The run directory's safety: atomic writes, an exclusive lock, refusing to mix two runs, and a
Ctrl-C that lets the current step finish."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import random
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from stableprompt.errors import UserError

# What a run directory holds; a fresh run refuses a directory with any of them (see --overwrite).
RUN_FILES = ("config.yaml", "metrics.jsonl", "best_prompts.json", "checkpoints")


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over an earlier one (its files would mix with the new run's)."""
    if resume or overwrite or not out.is_dir():
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise UserError(
            f"{out} already holds a run ({', '.join(found)}): pass --overwrite to replace it, "
            f"--resume {out} to continue it, or another --out"
        )


def latest_checkpoint(run_dir: Path) -> Path:
    """The folder checkpoints/latest names, checked to be a complete checkpoint of the run."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise UserError(f"no checkpoint in {run_dir} (start a new run without --resume)")
    name = pointer.read_text().strip()
    if not re.fullmatch(r"step-\d+", name):  # never follow a pointer out of the run
        raise UserError(f"{pointer} names {name!r}, not a checkpoint (start a new run)")
    ckpt = run_dir / "checkpoints" / name
    if not (ckpt / "state.pt").is_file():
        raise UserError(f"checkpoint {ckpt} is missing or incomplete (start a new run)")
    return ckpt


def read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict]:
    """(tensors, state, trainer meta) of one checkpoint folder, all read before any is applied,
    so a corrupt file is a one-line error and leaves the trainer as it was."""
    try:
        tensors = load_file(ckpt / "weights.safetensors")
        state = torch.load(ckpt / "state.pt", weights_only=True)
        meta = json.loads((ckpt / "trainer.json").read_text())
        # dev_seen, dev_halves: the dev scores so far (`Algorithm.dev_scores`); older
        # checkpoints lack them
        meta = {key: meta[key] for key in ("step", "pool", "calls_used")} | {
            key: dict(meta.get(key, {})) for key in ("dev_seen", "dev_halves")
        }
    except (
        OSError,
        RuntimeError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"checkpoint {ckpt} is corrupt ({type(err).__name__}: {first[:120]}): delete it and "
            "write an earlier step-N into checkpoints/latest, or start again with --overwrite"
        ) from None
    return tensors, state, meta


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a reader (or a killed writer) never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file a normal file's mode
    os.replace(tmp, path)


def best_words(summary: dict) -> list[str]:
    """The label words to score the prompt a best_prompts.json returns with: its own, else
    the run's (the manual prompt's, where the run kept it)."""
    best = summary.get("best") or (summary.get("prompts") or [{}])[0]  # before "best" existed
    return best.get("label_words") or summary.get("label_words") or []


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint at `step`: the resumed run logs them again."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if step_of(ln) <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a blank or half-written line (a killed run) sorts last,
    so truncation drops it."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


class RunLock:
    """An exclusive lock on RUN_DIR/.lock for the life of a run: a second writer gets a one-line
    error naming the holder's pid. The OS drops the lock when the holder dies (kill -9 too)."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"

    def __enter__(self) -> RunLock:
        self.file = self.path.open("a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise UserError(
                f"run directory {self.path.parent} is in use by process {holder} "
                "(wait for it to finish, stop it, or pass another --out)"
            ) from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # releases the lock


class Interrupted(Exception):
    """Ctrl-C during training: the step in progress finished and a checkpoint was saved."""

    def __init__(self, step: int, out: Path):
        super().__init__(f"stopped at step {step}")
        self.step, self.out = step, out


class StopFlag:
    requested = False


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[StopFlag]:
    """The first Ctrl-C asks the loop to stop after the current step; a second one aborts."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print(
            "\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
