"""A run never mixes or silently loses work: locked run directories, refusal to overwrite,
half-written state from a killed run, Ctrl-C."""

import fcntl
import json
import os
import signal

import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.trainer import Interrupted, Trainer

from .test_trainer import make_config, make_ctx


def trainer(model_dir, out, **kw) -> Trainer:
    return Trainer(make_config(model_dir, out, **kw), make_ctx(model_dir), progress=False)


def test_a_fresh_run_refuses_a_run_directory_unless_overwrite(tiny_model_dir, tmp_path):
    trainer(tiny_model_dir, tmp_path, steps=2, save_every=2).train()
    with pytest.raises(UserError, match="already holds a run .* --overwrite"):
        trainer(tiny_model_dir, tmp_path, steps=2).train()
    (tmp_path / "metrics.jsonl").write_text('{"step": 99}\n')  # a stale line of the old run
    trainer(tiny_model_dir, tmp_path, steps=1, save_every=1).train(overwrite=True)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").open()]
    assert steps == [0, 1]


def test_a_second_writer_is_refused_with_the_holders_pid(tiny_model_dir, tmp_path):
    with (tmp_path / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(UserError, match="in use by process 4242"):
            trainer(tiny_model_dir, tmp_path, steps=1).train()
    trainer(tiny_model_dir, tmp_path, steps=1).train()  # released: runs


def test_resume_survives_a_half_written_metrics_line_and_an_orphan_partial(
    tiny_model_dir, tmp_path
):
    trainer(tiny_model_dir, tmp_path, steps=2, save_every=2).train()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward_me')  # killed mid-write
    orphan = tmp_path / "checkpoints" / ".partial-abc"
    orphan.mkdir()
    (orphan / "weights.safetensors").write_bytes(b"x" * 100)
    summary = trainer(tiny_model_dir, tmp_path, steps=4, save_every=2).train(resume=True)
    assert summary["steps"] == 4
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").open()]
    assert steps == [0, 1, 2, 3, 4]
    assert not orphan.exists()


def test_a_checkpoint_pointer_outside_the_run_is_refused(tiny_model_dir, tmp_path):
    trainer(tiny_model_dir, tmp_path, steps=2, save_every=2).train()
    (tmp_path / "checkpoints" / "latest").write_text("../../elsewhere")
    with pytest.raises(UserError, match="not a checkpoint"):
        trainer(tiny_model_dir, tmp_path, steps=4).train(resume=True)


def test_ctrl_c_finishes_the_step_saves_and_resumes(tiny_model_dir, tmp_path):
    run = trainer(tiny_model_dir, tmp_path / "cut", steps=6, save_every=100)
    step = run.algorithm.train_step

    def interrupted_step(n):
        if n == 2:  # Ctrl-C arrives during the third step
            os.kill(os.getpid(), signal.SIGINT)
        return step(n)

    run.algorithm.train_step = interrupted_step
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN if a shell ran pytest in the background
    with pytest.raises(Interrupted) as stopped:
        run.train()
    assert stopped.value.step == 3  # the step in progress finished
    assert (tmp_path / "cut" / "checkpoints" / "step-3").is_dir()
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    summary = trainer(tiny_model_dir, tmp_path / "cut", steps=6).train(resume=True)
    full = trainer(tiny_model_dir, tmp_path / "full", steps=6, save_every=100).train()
    assert summary["steps"] == 6
    assert [p["prompt"] for p in summary["prompts"]] == [p["prompt"] for p in full["prompts"]]


def varied_ctx(model_dir: str, dtype: str):
    """Train and dev inputs of very different lengths: how they are batched changes padding."""
    from stableprompt.contexts import TextContext
    from stableprompt.models import LocalScorer, load_lm
    from stableprompt.tasks import Example, get_task

    model, tokenizer = load_lm(model_dir, dtype=dtype, shared=True)
    words = "the film was a great long boring plot with bad acting and fun parts".split()
    texts = [" ".join(words[: 2 + 3 * i % 13]) for i in range(12)]
    examples = [Example(t, i % 2) for i, t in enumerate(texts)]
    splits = {"train": examples[:8], "dev": examples[8:], "test": examples[8:]}
    return TextContext(get_task("sst-2"), splits, LocalScorer(model, tokenizer))


def _without_times(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if not k.startswith("seconds")}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tiny_model_dir, tmp_path, dtype):
    """Scores must not depend on the scorer's history (what its caches held, how it batched):
    in bf16 a different batch changes a score, so a resume that rebuilt the caches diverged."""

    def run(out, steps: int, resume: bool = False) -> None:
        config = make_config(
            tiny_model_dir,
            out,
            steps=steps,
            dtype=dtype,
            algo="sparse-sql",
            pin_top_k=50,
            train_examples=2,  # each step draws its inputs: batches differ from step to step
        )
        Trainer(config, varied_ctx(tiny_model_dir, dtype), progress=False).train(resume=resume)

    run(tmp_path / "full", 8)
    run(tmp_path / "cut", 4)  # leaves its step-4 checkpoint, as a run killed after step 4 would
    run(tmp_path / "cut", 8, resume=True)
    full, cut = tmp_path / "full", tmp_path / "cut"
    lines = [(d / "metrics.jsonl").read_text().splitlines() for d in (full, cut)]
    assert [_without_times(ln) for ln in lines[0]] == [_without_times(ln) for ln in lines[1]]
    best = [json.loads((d / "best_prompts.json").read_text()) for d in (full, cut)]
    assert best[0] == best[1]


def test_a_checkpoint_restores_the_scores_seen_before_it(tiny_model_dir, tmp_path):
    """A recomputed score shares a batch with other rows and can differ in its last bits, so the
    scorer's cache is checkpointed and a resumed run starts with the scores the killed one had."""
    first = trainer(tiny_model_dir, tmp_path, steps=2, save_every=2)
    first.save()  # before any step: an empty cache
    first.train(overwrite=True)  # 2 steps, saved before the final test scoring
    resumed = trainer(tiny_model_dir, tmp_path, steps=4)
    resumed.load(tmp_path)
    restored, before = resumed.ctx.scorer.cache.store, first.ctx.scorer.cache.store
    assert restored and all(torch.equal(value, before[key]) for key, value in restored.items())
    # the manual prompt was scored with the run's words only after the save, at the final scoring
    manual = [k for k in before if k[3] == "It was" and len(k[2]) == 2]
    assert manual and not any(k in restored for k in manual)
