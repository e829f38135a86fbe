"""The loop every algorithm shares: steps, dev evaluation, the pool, the budget, checkpoints.

One contract for very different optimisers (TRL-style): a `TrainConfig` (config.py), a task
context (contexts/) and an `Algorithm` (algorithms/) that knows how to take one training step
and which prompts to put forward for evaluation. The trainer owns everything else: dev
evaluation, the pool of best prompts, the final test evaluation (test never chooses anything),
the target-call budget, atomic checkpoints and exact resume, metrics.jsonl and the progress bar
(TextContext, build_context and load_task are re-exported: scripts import them from here).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from safetensors.torch import save_file

from stableprompt.config import TrainConfig
from stableprompt.contexts import TaskContext, TextContext, build_context, load_task  # noqa: F401
from stableprompt.errors import UserError
from stableprompt.loggers import make_logger
from stableprompt.models.loading import dtype_name
from stableprompt.rundir import (
    RUN_FILES,
    Interrupted,
    RunLock,
    StopFlag,
    atomic_write_text,
    check_run_dir,
    latest_checkpoint,
    read_checkpoint,
    rng_state,
    set_rng_state,
    stop_on_sigint,
    truncate_metrics,
)
from stableprompt.selection import (
    PromptPool,
    against_manual,
    returned_prompt,
    split_half_reliability,
)
from stableprompt.tasks.demonstrations import count_pairs

if TYPE_CHECKING:
    from stableprompt.algorithms.base import Algorithm


class Trainer:
    """Runs an algorithm on a task; writes config.yaml, metrics.jsonl, best_prompts.json and
    checkpoints/ into `config.out`."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: TaskContext,
        algorithm: Algorithm | None = None,
        progress: bool = True,
    ):
        self.config, self.ctx = config, ctx
        self.out = Path(config.out)
        self.progress = progress
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        if algorithm is None:  # imported on use: eval and transfer need no algorithm
            from stableprompt.algorithms import build_algorithm

            algorithm = build_algorithm(config, ctx)
        self.algorithm = algorithm
        self.pool = PromptPool(config.pool_size)
        self.step = 0
        self.calls_before = 0  # target scorings of earlier (pre-resume) sessions
        self.stop = StopFlag()  # set by Ctrl-C while train() runs
        self.logger = make_logger(None, self.out, {})  # train() opens the configured one

    # -- budget ------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        return self.algorithm.total_steps()

    def evaluates_at(self, step: int) -> bool:
        """Whether the loop scores the eval prompts on dev once `step` steps are done."""
        return step == 0 or step % self.config.eval_every == 0 or step == self.steps

    def eval_calls(self) -> int:
        """Target calls of one dev evaluation, at most."""
        return self.algorithm.prompts_per_eval() * self.algorithm.selection_size()

    def projected_calls(self) -> int:
        """Every call of the whole run: steps, dev evaluations and the final test scoring."""
        train = sum(self.algorithm.step_calls(step) for step in range(self.steps))
        every = self.config.eval_every  # step 0, every `every` steps, and the last one
        evals = 1 + self.steps // every + (self.steps % every != 0)
        dev, test = self.algorithm.selection_size(), len(self.ctx.splits.get("test") or [])
        # the manual prompt on dev and test; then the check scores the pool's best on dev again
        check = dev if self.config.conditioning == "task" else 0
        manual = dev + test + check if self._scores_manual() else 0
        refit = self.algorithm.refit_calls()
        pool = 1 if self.config.conditioning == "input" else self.config.pool_size  # the agent
        return train + evals * self.eval_calls() + refit + pool * test + manual

    def calls_used(self) -> int:
        return self.calls_before + self.ctx.scorer.calls

    def affordable(self, calls: int) -> bool:
        """Whether `calls` more target calls stay within --max-target-calls."""
        cap = self.config.max_target_calls
        return cap is None or self.calls_used() + calls <= cap

    def next_step_calls(self) -> int:
        """The next step's calls plus the dev scoring of one eval prompt (the greedy prompt,
        which `eval_prompts` puts first), so that the step the budget ends on is evaluated, and
        the final choice of label words. The rest of that evaluation takes what is left
        (`affordable_eval_prompts`): a full evaluation reserved after every step left up to
        `prompts_per_eval` dev scorings of the budget unspent."""
        reserved = min(self.algorithm.prompts_per_eval(), 1) * self.algorithm.selection_size()
        return self.algorithm.step_calls(self.step) + reserved + self.algorithm.refit_calls()

    def affordable_eval_prompts(self, prompts: list[str]) -> list[str]:
        """The eval prompts the budget still pays for, in the algorithm's order (greedy first):
        a prompt scored before in the run is free (`Algorithm.dev_cost`); the final choice of
        label words stays reserved. All of them when there is no cap."""
        cap = self.config.max_target_calls
        if cap is None:
            return prompts
        left = cap - self.calls_used() - self.algorithm.refit_calls()
        kept = []
        for prompt in prompts:
            cost = self.algorithm.dev_cost(prompt)
            if cost <= left:
                kept.append(prompt)
                left -= cost
        return kept

    # -- checkpoints -------------------------------------------------------------------------

    def save(self) -> Path:
        """Write checkpoints/step-N atomically, then point checkpoints/latest at it."""
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        for orphan in root.glob(".partial-*"):  # left by a run killed while saving
            shutil.rmtree(orphan, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.algorithm.tensors().items()},
            tmp / "weights.safetensors",
        )
        scorer = self.ctx.scorer.state() if hasattr(self.ctx.scorer, "state") else None
        state = {"algorithm": self.algorithm.state(), "rng": rng_state(), "scorer": scorer}
        torch.save(state, tmp / "state.pt")
        meta = {
            "step": self.step,
            "pool": self.pool.entries,
            "calls_used": self.calls_used(),
            "dev_seen": self.algorithm.dev_seen,
            "dev_halves": self.algorithm.dev_halves,
        }
        (tmp / "trainer.json").write_text(json.dumps(meta))
        final = root / f"step-{self.step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(root / "latest", final.name)
        for old in root.glob("step-*"):  # keep only the newest checkpoint
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, run_dir: Path) -> None:
        tensors, state, meta = read_checkpoint(latest_checkpoint(run_dir))
        self.algorithm.load_tensors(tensors)
        self.algorithm.load_state(state["algorithm"])
        set_rng_state(state["rng"])
        if state.get("scorer"):  # the scores seen before the kill, exactly as they were
            self.ctx.scorer.load_state(state["scorer"])
        self.step = meta["step"]
        self.pool = PromptPool(self.config.pool_size, meta["pool"])
        self.algorithm.dev_seen, self.algorithm.dev_halves = meta["dev_seen"], meta["dev_halves"]
        self.calls_before = meta["calls_used"] - self.ctx.scorer.calls
        truncate_metrics(self.out / "metrics.jsonl", self.step)

    # -- loop --------------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.logger.log(record)

    def evaluate(self) -> dict:
        prompts = self.affordable_eval_prompts(list(dict.fromkeys(self.algorithm.eval_prompts())))
        if not prompts:  # e.g. best-of-n before its first draw
            return {}
        scores = self.algorithm.dev_scores(prompts)
        for prompt, score in zip(prompts, scores):
            self.pool.add(prompt, score, self.step)
        best = max(range(len(prompts)), key=scores.__getitem__)
        return {"dev_accuracy": scores[best], "dev_prompt": prompts[best]}

    def train(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train for config.steps (or until the budget runs out), then score the pool on test.

        The run directory is locked while it runs; a fresh run refuses a directory that already
        holds a run unless `overwrite` (which deletes that run's files first). Ctrl-C finishes
        the current step, saves a checkpoint and raises `Interrupted`."""
        c = self.config
        check_run_dir(self.out, resume, overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        with RunLock(self.out):
            if resume:
                self.load(self.out)
            else:
                for name in RUN_FILES:
                    path = self.out / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            config_text = yaml.safe_dump(c.to_dict(), sort_keys=False)
            atomic_write_text(self.out / "config.yaml", config_text)
            self.logger = make_logger(c.log_to, self.out, c.to_dict())
            try:
                with stop_on_sigint() as stop:
                    self.stop = stop
                    return self._train_loop()
            finally:
                self.logger.close()

    def _first_evaluation(self) -> None:
        needed = self.eval_calls() + self.algorithm.refit_calls()  # and the words chosen at the end
        if not self.affordable(needed):
            raise UserError(
                f"--max-target-calls {self.config.max_target_calls} cannot pay for the first dev "
                f"evaluation ({needed:,} calls after {self.calls_used():,}; raise it)"
            )
        self.log({"step": 0, **self.evaluate(), "calls": self.calls_used()})

    def _train_loop(self) -> dict:
        c = self.config
        print(
            f"projected target calls: {self.projected_calls():,} ({self.steps} steps x "
            f"{self.algorithm.calls_per_step()} per step, plus dev/test evaluation)"
            + (f"; budget {c.max_target_calls:,}" if c.max_target_calls else "")
        )
        if self.step == 0:
            self._first_evaluation()
        bar = _progress(self.steps, self.step, self.progress)
        last_dev = None  # the progress bar shows the latest dev score between evaluations
        started, calls_at_start = time.time(), self.calls_used()
        while self.step < self.steps:
            # Stop before a step whose calls (and its greedy prompt's dev scoring) would pass the
            # budget; cache hits count as calls too, so the count is exact.
            if not self.affordable(self.next_step_calls()):
                print(f"budget of {c.max_target_calls:,} target calls reached at step {self.step}")
                break
            metrics = self.algorithm.train_step(self.step) | self.ctx.reward_metrics()
            for prompt, score in metrics.pop("dev_scores", {}).items():
                self.pool.add(prompt, score, self.step + 1)
            self.step += 1
            record = {
                "step": self.step,
                **metrics,
                "calls": self.calls_used(),
                "seconds": round(time.time() - started, 2),
            }
            last = not self.affordable(self.next_step_calls())  # the budget ends the run here
            if self.evaluates_at(self.step) or last:
                record.update(self.evaluate())
            self.log(record)
            rate = (self.calls_used() - calls_at_start) / max(time.time() - started, 1e-9)
            last_dev = record.get("dev_accuracy", last_dev)
            bar.set_postfix(
                reward=f"{metrics['reward_mean']:.2f}",
                dev="-" if last_dev is None else f"{last_dev:.3f}",
                calls_s=f"{rate:.0f}",
                prompt=metrics.get("prompt", "")[:40],
            )
            bar.update(1)
            if self.step % c.save_every == 0 or self.step == self.steps:
                self.save()
            if self.stop.requested:
                bar.close()
                self.save()
                raise Interrupted(self.step, self.out)
        bar.close()
        self.save()
        return self.finish()

    def _scores_manual(self) -> bool:
        return bool(
            self.algorithm.manual_prompt() is not None
            and self.algorithm.trainable
            and self.config.score_manual
        )

    def _manual_baseline(self, scored) -> tuple[dict | None, torch.Tensor | None]:
        """The task's hand-written prompt scored like the pool (dev, then test), so every run
        ends with the comparison a user wants, and its dev score per example (for the check);
        skipped for baselines, which are themselves one."""
        if not self._scores_manual():
            return None, None
        prompt = self.algorithm.manual_prompt()
        dev = self.algorithm.selection_scores([prompt])[0]
        return scored({"prompt": prompt, "dev": dev.nanmean().item()}), dev

    def _score_test_together(self, entries: list[dict]) -> None:
        """Score the pool and the manual prompt on test in one pass per label-word set, so that
        each test input is encoded once, not once per prompt (a test set outgrows the scorer's
        prefix store); the reports that follow are cache hits. The pass counts no calls: the
        reports count the same pairs."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for entry in entries:
            groups.setdefault(tuple(entry.get("label_words") or ()), []).append(entry["prompt"])
        if self._scores_manual():
            groups.setdefault((), []).append(self.algorithm.manual_prompt())
        with self._uncounted():
            for words, prompts in groups.items():
                self.ctx.example_scores(prompts, "test", list(words) or None)

    @contextlib.contextmanager
    def _uncounted(self):
        """Scorings of pairs the final reports count themselves: no target calls."""
        calls = self.ctx.scorer.calls
        try:
            yield
        finally:
            self.ctx.scorer.calls = calls

    def finish(self) -> dict:
        """Score the pool on test once; the best prompt is the one with the best dev score
        (with its own label words where `Algorithm.refit_calls` paid for them)."""
        fit = self.ctx.fit_label_words if self.algorithm.refit_calls() else lambda prompt: {}
        entries = sorted([e | fit(e["prompt"]) for e in self.pool.entries], key=lambda e: -e["dev"])
        calls_before_test = self.calls_used()
        self.ctx.scorer.progress = self.progress  # a bar while a test set of thousands scores
        test = self.ctx.splits.get("test") or []
        todo = len(entries) + self._scores_manual()
        done = [0]
        if test and self.progress:
            print(f"scoring {todo} prompt(s) once on {len(test):,} test inputs", file=sys.stderr)
        if test and self.ctx.label_words and self.config.conditioning == "task":
            self._score_test_together(entries)

        pairs = self.algorithm.pair_texts

        def scored(entry: dict) -> dict:
            result = dict(entry)
            if pairs:  # prompts made of solved pairs: how many this one shows
                result["pairs"] = count_pairs(entry["prompt"], pairs)
            if test:
                done[0] += 1
                started = time.time()
                report = self.algorithm.report(entry["prompt"], "test", entry.get("label_words"))
                result.update(test=report["accuracy"], test_ci95=list(report["ci95"]))
                if self.progress:  # a long silence otherwise: test sets hold thousands of inputs
                    print(
                        f"test {done[0]}/{todo}: {report['accuracy']:.3f} on {len(test):,} "
                        f"inputs in {time.time() - started:.0f} s  {entry['prompt'][:50]!r}",
                        file=sys.stderr,
                    )
            return result

        results = [scored(entry) for entry in entries]
        manual, manual_dev = self._manual_baseline(scored)
        check = None
        if manual and results and self.config.conditioning == "task":
            learned = self.algorithm.selection_scores(
                [results[0]["prompt"]], results[0].get("label_words")
            )[0]
            check = against_manual(learned, manual_dev)
        best = returned_prompt(results, manual, check, self.config.replace_manual_p)
        test_check = None  # reported only: the same paired test on test, which chooses nothing
        if check and test:
            with self._uncounted():  # the pairs the reports above scored: cache hits
                learned, manual_test = (
                    self.ctx.example_scores([e["prompt"]], "test", e.get("label_words"))[0]
                    for e in (results[0], manual)
                )
            test_check = against_manual(learned, manual_test)
        summary = {
            "algo": self.config.algo,
            "metric": self.ctx.metric,  # what dev and test report
            "select_on": self.config.select_on,  # what "dev" scores: dev, or dev and train
            "dtype": dtype_name(self.config.dtype),  # what local models ran in (auto resolved)
            "template": self.ctx.template,  # solved pairs change it
            "shows_pairs": self.config.shows_pairs,  # solved train pairs before each input
            "label_words": list(self.ctx.task.label_words),
            "label_word_search": self.ctx.label_search,
            # generation: where answers were cut (--answer-tokens, or its default resolved)
            "answer_tokens": self.ctx.max_new_tokens if self.ctx.generation else None,
            "best_prompt": best["prompt"] if best else None,
            "best": best,  # the pool's best, or the manual prompt it did not beat on dev
            "prompts": results,
            "manual": manual,
            # the pool's best against the manual prompt, per test example (as "check" on dev)
            "test_check": test_check,
            # can dev tell the prompts the run scored apart? (near 0: the best is the luckiest)
            "dev_reliability": split_half_reliability(list(self.algorithm.dev_halves.values())),
            "dev_prompts_scored": len(self.algorithm.dev_halves),
            "steps": self.step,
            "target_calls": calls_before_test,  # training and dev evaluation: the budgeted calls
            "test_calls": self.calls_used() - calls_before_test,
            **self.algorithm.summary(),  # e.g. a conditioned agent's: no best prompt, sample rows
        }
        atomic_write_text(self.out / "best_prompts.json", json.dumps(summary, indent=2))
        return summary


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm  # slow to import: only when a run starts

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc="train")
