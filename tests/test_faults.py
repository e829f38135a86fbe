"""A run never mixes or silently loses work: locked run directories, refusal to overwrite,
half-written state from a killed run, Ctrl-C."""

import fcntl
import json
import os
import signal

import pytest

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
    with pytest.raises(Interrupted) as stopped:
        run.train()
    assert stopped.value.step == 3  # the step in progress finished
    assert (tmp_path / "cut" / "checkpoints" / "step-3").is_dir()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    summary = trainer(tiny_model_dir, tmp_path / "cut", steps=6).train(resume=True)
    full = trainer(tiny_model_dir, tmp_path / "full", steps=6, save_every=100).train()
    assert summary["steps"] == 6
    assert [p["prompt"] for p in summary["prompts"]] == [p["prompt"] for p in full["prompts"]]
