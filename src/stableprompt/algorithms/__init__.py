"""The optimisers and their registry: `--algo NAME` -> the class that trains it.

Importing this package imports every algorithm (and so the training stack); the trainer imports
it only when it has to build one, so `stableprompt eval` never pays for it.
"""

from __future__ import annotations

from stableprompt.algorithms.base import Algorithm
from stableprompt.algorithms.baselines import BestOfN, FixedPrompts, RandomRace
from stableprompt.algorithms.conditioned import ConditionedPPO
from stableprompt.algorithms.ppo import AdaptivePPO
from stableprompt.algorithms.sparse_sql import SparseSoftQLearning
from stableprompt.algorithms.sql import SoftQLearning
from stableprompt.config import ALGOS, TrainConfig
from stableprompt.contexts.base import TaskContext
from stableprompt.errors import UserError

REGISTRY: dict[str, type[Algorithm]] = {
    "sql": SoftQLearning,
    "sparse-sql": SparseSoftQLearning,
    "ppo": AdaptivePPO,
    "appo": AdaptivePPO,
    "manual": FixedPrompts,
    "random": FixedPrompts,
    "in-context": FixedPrompts,
    "best-of-n": BestOfN,
}
assert set(REGISTRY) == set(ALGOS), "every --algo choice needs a class"


def build_algorithm(config: TrainConfig, ctx: TaskContext) -> Algorithm:
    """The algorithm `config.algo` names, on the task `ctx`."""
    if config.algo not in REGISTRY:
        raise UserError(f"unknown algorithm {config.algo!r} (use {', '.join(REGISTRY)})")
    if config.conditioning == "input":  # a prompt per input; TrainConfig allows appo, ppo only
        return ConditionedPPO(config, ctx)
    if config.algo == "random" and config.halving:
        return RandomRace(config, ctx)
    return REGISTRY[config.algo](config, ctx)


__all__ = ["REGISTRY", "Algorithm", "build_algorithm"]
