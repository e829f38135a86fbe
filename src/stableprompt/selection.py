"""Which prompt a run returns: the pool of best prompts by dev, and the check that keeps the
user's own prompt unless a learned one beats it on dev beyond noise.

Dev sets are small (16-shot SST-2 has 32 sentences) and a run scores hundreds of prompts on
them, so the pool's best dev score is inflated: the winner's curse. The check asks for a paired
sign test on the dev examples the two prompts disagree on, which is blind to how many prompts
were tried, and returns the manual prompt when the evidence is not there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stableprompt.tasks.metrics import sign_test


class PromptPool:
    """The best distinct prompts by dev score, highest first."""

    def __init__(self, size: int, entries: list[dict] | None = None):
        self.size = size
        self.entries: list[dict] = entries or []

    def add(self, prompt: str, dev: float, step: int) -> None:
        """A prompt scored again keeps its best score: a fixed prompt's never changes, but a
        conditioned agent's entry (a prompt per input) improves as it trains."""
        if any(e["prompt"] == prompt and e["dev"] >= dev for e in self.entries):
            return
        self.entries = [e for e in self.entries if e["prompt"] != prompt]
        self.entries.append({"prompt": prompt, "dev": dev, "step": step})
        # ties keep the earlier prompt: sort is stable and we sort by score only
        self.entries.sort(key=lambda e: -e["dev"])
        del self.entries[self.size :]


def against_manual(learned: Tensor, manual: Tensor) -> dict:
    """The paired comparison of a learned prompt and the manual prompt (or any baseline) from
    their scores on each example of a split (NaN where the learned prompt shows the example): on
    how many each scores higher, and the one-sided sign-test p that the learned one is better."""
    # NaN compares false both ways: an example the learned prompt shows is neither
    wins, losses = int((learned > manual).sum()), int((learned < manual).sum())
    return {"wins": wins, "losses": losses, "p": sign_test(wins, losses)}


def returned_prompt(results: list[dict], manual: dict | None, check: dict | None, p: float):
    """The run's result: the pool's best, unless the manual prompt was scored and the best did
    not beat it on dev at sign-test p < `p` (`p` >= 1 turns the check off). Each carries
    "source" (learned or manual) and the check that chose it."""
    if not results:
        return None
    if manual is None or check is None or p >= 1 or check["p"] < p:
        return results[0] | {"source": "learned", "check": check}
    return manual | {"source": "manual", "check": check}


def split_halves(scores: Tensor) -> list[list[float]]:
    """[prompts, examples] -> each prompt's mean on the even- and on the odd-numbered examples
    (NaN, an example a prompt shows, left out), for `split_half_reliability`."""
    return torch.stack([scores[:, 0::2].nanmean(1), scores[:, 1::2].nanmean(1)], 1).tolist()


def split_half_reliability(halves: list[list[float]]) -> float | None:
    """How well the selection examples tell the scored prompts apart: the Pearson r, over the
    prompts, of each one's mean score on the even-numbered examples with its mean on the odd
    ones, stepped up to all of them (Spearman-Brown, 2r / (1 + r)) and floored at 0. Near 0
    the prompts' scores differ by the examples' noise alone, and the best is the luckiest; None
    with fewer than 3 prompts or halves that do not vary."""
    if len(halves) < 3:
        return None
    r = torch.corrcoef(torch.tensor(halves).T)[0, 1].item()
    if r != r:  # NaN: constant halves
        return None
    return 2 * r / (1 + r) if r > 0 else 0.0
