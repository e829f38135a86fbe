"""Optional experiment loggers: mirror each metrics.jsonl record to TensorBoard or W&B.

metrics.jsonl stays the record of a run; these only copy its numeric values (strings such as
prompts and anchor events are left out) at `step = record["step"]`. Each backend is an extra:
`pip install 'stableprompt[tensorboard]'` or `'stableprompt[wandb]'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from stableprompt.errors import UserError


class Logger(Protocol):
    def log(self, record: dict) -> None: ...

    def close(self) -> None: ...


def numeric(record: dict) -> dict[str, float]:
    """The record's numbers (bools and the step itself excluded)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class NullLogger:
    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.writer = SummaryWriter(str(log_dir))

    def log(self, record: dict) -> None:
        for key, value in numeric(record).items():
            self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, out_dir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        self.run = wandb.init(project="stableprompt", config=config, dir=str(out_dir))

    def log(self, record: dict) -> None:
        self.run.log(numeric(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def _missing(kind: str) -> UserError:
    return UserError(
        f"{kind} logging needs the {kind} package (pip install 'stableprompt[{kind}]')"
    )


def make_logger(kind: str | None, out_dir: Path, config: dict) -> Logger:
    """kind None (or "none") logs nothing; "tensorboard" writes out_dir/tensorboard; "wandb"
    starts a W&B run in project "stableprompt" with `config`, its files under out_dir/wandb."""
    out_dir = Path(out_dir)
    if kind in (None, "", "none"):
        return NullLogger()
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "tensorboard":
        return TensorBoardLogger(out_dir / "tensorboard")
    if kind == "wandb":
        return WandbLogger(out_dir, config)
    raise UserError(f"unknown logger {kind!r} (use tensorboard or wandb)")
