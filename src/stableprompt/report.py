"""Reports: plots and a markdown summary of one training run, and an overlay of several runs.

Reads only what the Trainer writes into a run directory: config.yaml, metrics.jsonl (one JSON
record per step) and best_prompts.json (absent when the run was stopped before it finished).
`write_report(run)` writes run/report.md and run/report/*.png; `write_compare(runs, out)` writes
out/compare.md, out/reward.png and out/dev.png. Plots use matplotlib's Agg canvas directly (no
pyplot), so they work headless and leave the caller's matplotlib backend alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from stableprompt.errors import UserError

ANCHOR_EVENTS = ("update", "rollback", "keep")
DOTS = {"marker": "o", "markersize": 3}


@dataclass
class Run:
    dir: Path
    config: dict
    records: list[dict]
    best: dict | None  # best_prompts.json, None if the run did not finish

    @property
    def algo(self) -> str:
        return str(self.config.get("algo", "?"))

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of the records that have a numeric `key`."""
        pairs = [
            (r["step"], float(r[key]))
            for r in self.records
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
        ]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def wall_seconds(self) -> float:
        """Training time over the logged steps; `seconds` restarts at 0 in each resumed session."""
        total = last = 0.0
        for r in self.records:
            if "seconds" in r:
                if r["seconds"] < last:  # a new session started here
                    total += last
                last = r["seconds"]
        return total + last

    def top_prompt(self) -> dict | None:
        """The best prompt: from best_prompts.json, else the best dev prompt in the metrics."""
        if self.best and self.best.get("prompts"):
            return self.best["prompts"][0]
        evals = [r for r in self.records if "dev_accuracy" in r and "dev_prompt" in r]
        if not evals:
            return None
        r = max(evals, key=lambda r: r["dev_accuracy"])  # earliest wins ties
        return {"prompt": r["dev_prompt"], "dev": r["dev_accuracy"], "step": r["step"]}

    def returned_prompt(self) -> dict | None:
        """What the run returns: best_prompts.json's `best` (the pool's best, or the manual
        prompt when dev did not show the pool's better), else `top_prompt` (older or stopped
        runs)."""
        return (self.best or {}).get("best") or self.top_prompt()

    def target_calls(self) -> int:
        """Training and dev calls: best_prompts.json's count includes the last evaluation,
        which the last metrics record (logged before it) does not."""
        return int((self.best or {}).get("target_calls") or self.records[-1].get("calls", 0))


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir} (pass the --out of a train run)")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        hint = "is it a run directory written by `stableprompt train`?"
        raise UserError(f"no metrics.jsonl in {run_dir} ({hint})")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # a half-written last line is a run being written or killed
                raise UserError(
                    f"line {i + 1} of {path} is not JSON (the file is corrupt)"
                ) from None
    if not records:
        raise UserError(f"metrics.jsonl in {run_dir} is empty (the run has not logged a step yet)")
    config_path, best_path = run_dir / "config.yaml", run_dir / "best_prompts.json"
    config = (yaml.safe_load(config_path.read_text()) if config_path.is_file() else None) or {}
    best = json.loads(best_path.read_text()) if best_path.is_file() else None
    return Run(run_dir, config, records, best)


# -- plots -------------------------------------------------------------------------------------


def _figure(title: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def reward_key(run: Run) -> str:
    """The logged reward to show: style transfer's un-normalised one when there is one (its
    training reward is z-scored per input, so it averages ~0 at every step)."""
    raw = any("reward_raw_mean" in r for r in run.records)
    return "reward_raw_mean" if raw else "reward_mean"


def plot_reward(run: Run, path: Path) -> Path | None:
    key = reward_key(run)
    steps, mean = run.series(key)
    if not steps:
        return None
    std = dict(zip(*run.series("reward_std"))) if key == "reward_mean" else {}
    lo = [m - std.get(s, 0.0) for s, m in zip(steps, mean)]
    hi = [m + std.get(s, 0.0) for s, m in zip(steps, mean)]
    fig, ax = _figure("training reward", "reward" if key == "reward_mean" else "raw reward")
    ax.plot(steps, mean, label="mean")
    if std:
        ax.fill_between(steps, lo, hi, alpha=0.25, label="± std")
    ax.legend()
    return _save(fig, path)


def plot_dev(run: Run, path: Path) -> Path | None:
    steps, dev = run.series("dev_accuracy")
    if not steps:
        return None
    fig, ax = _figure("dev accuracy of the evaluation prompt", "dev accuracy")
    ax.plot(steps, dev, **DOTS)
    words = (run.best or {}).get("label_words")  # a finished classification run knows its classes
    if words:
        ax.axhline(1 / len(words), color="gray", linestyle="--", label="chance")
        ax.legend()
    return _save(fig, path)


def plot_anchor(run: Run, path: Path) -> Path | None:
    checks = [r for r in run.records if r.get("anchor_event") in ANCHOR_EVENTS]
    if not checks:
        return None
    label = {  # --anchor-on: what the two are compared on
        "reward": "train reward over dev",
        "samples": "mean train reward of the samples",
    }.get(run.config.get("anchor_on"), "dev score")
    fig, ax = _figure("APPO: agent vs anchor", label)
    steps = [r["step"] for r in checks]
    ax.plot(steps, [r["agent_dev"] for r in checks], marker="o", markersize=3, label="agent")
    ax.plot(steps, [r["anchor_dev"] for r in checks], marker="s", markersize=3, label="anchor")
    for event, style in (
        ("update", dict(color="tab:green", ls="--")),
        ("rollback", dict(color="tab:red", ls=":")),
    ):
        for i, r in enumerate(r for r in checks if r["anchor_event"] == event):
            ax.axvline(r["step"], alpha=0.7, label=event if i == 0 else None, **style)
    ax.legend()
    return _save(fig, path)


# -- markdown ----------------------------------------------------------------------------------


def _text(value) -> str:
    """A table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(prompt: str) -> str:
    """A prompt as an inline code span (spaces and markup kept) that is safe in a table cell."""
    prompt = prompt.replace("\r\n", "\n").replace("\n", "↵")
    ticks = "`" * (1 + max(map(len, re.findall("`+", prompt)), default=0))
    return f"{ticks} {prompt} {ticks}".replace("|", "\\|")  # one pad space each side is stripped


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours else f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


NO_BEST = (
    "No best_prompts.json: the run was stopped before it finished, so its prompts were never "
    "scored on test (`stableprompt train --resume RUN_DIR` completes it)."
)


def _prompt_rows(entries: list[dict]) -> list[list[str]]:
    rows = []
    for i, e in enumerate(entries):
        ci = "[" + ", ".join(map(_num, e["test_ci95"])) + "]" if e.get("test_ci95") else "–"
        dev, test = _num(e.get("dev")), _num(e.get("test"))
        rows.append([str(i + 1), _code(e["prompt"]), dev, test, ci, str(e.get("step", ""))])
    return rows


def reward_windows(run: Run, windows: int = 6) -> list[list[str]]:
    """Rows of the training reward averaged over `windows` equal blocks of steps, with the mean
    prompt length and KL to the reference (APPO/PPO) and the median seconds per step of each
    block."""
    key = reward_key(run)
    steps = [r for r in run.records if key in r]
    size = -(-len(steps) // windows) if steps else 0
    seconds = {r["step"]: r["seconds"] for r in run.records if "seconds" in r}
    rows = []
    for start in range(0, len(steps), size or 1):
        block = steps[start : start + size]
        lengths = [r["response_len"] for r in block if "response_len" in r]
        kls = [r["kl"] for r in block if "kl" in r]
        gaps = sorted(
            seconds[r["step"]] - seconds[r["step"] - 1]
            for r in block
            if r["step"] - 1 in seconds and seconds[r["step"]] >= seconds[r["step"] - 1]
        )
        rows.append(
            [
                f"{block[0]['step']}-{block[-1]['step']}",
                _num(sum(r[key] for r in block) / len(block)),
                _num(sum(lengths) / len(lengths), 1) if lengths else "–",
                _num(gaps[len(gaps) // 2], 1) if gaps else "–",
                _num(sum(kls) / len(kls), 1) if kls else "–",
            ]
        )
    return rows


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.md and its plots under run_dir/report/; returns the markdown path."""
    run = load_run(run_dir)
    c, last = run.config, run.records[-1]
    plots = {
        "Training reward": plot_reward(run, run.dir / "report" / "reward.png"),
        "Dev accuracy": plot_dev(run, run.dir / "report" / "dev.png"),
        "Anchor (APPO)": plot_anchor(run, run.dir / "report" / "anchor.png"),
    }
    keys = ["algo", "task", "target", "agent", "steps", "seed"]
    md = [f"# Report: {run.dir.resolve().name}", ""]
    md += _table(keys, [[_text(c.get(k, "?")) for k in keys]])
    md += [
        "",
        f"Ran {last['step']} of {c.get('steps', '?')} steps, {last.get('calls', 0):,} target "
        f"calls, {_duration(run.wall_seconds())} of training (logged steps).",
    ]
    dev_steps, dev = run.series("dev_accuracy")
    if dev:
        best = max(range(len(dev)), key=dev.__getitem__)
        md.append(f"Best dev accuracy {dev[best]:.3f} at step {dev_steps[best]}.")
    reliability = (run.best or {}).get("dev_reliability")
    if reliability is not None:  # `cli.format_summary` says what it means
        md.append(
            f"Dev reliability over the {run.best['dev_prompts_scored']} prompts scored: "
            f"{reliability:.2f} (split-half; near 0, dev could not tell them apart)."
        )
    for title, path in plots.items():
        if path is None:
            continue
        md += ["", f"## {title}", ""]
        if title == "Training reward":
            reward = "mean reward" if reward_key(run) == "reward_mean" else "mean raw reward"
            header = ["steps", reward, "mean prompt tokens", "median s/step", "mean KL (nats)"]
            md += _table(header, reward_windows(run)) + [""]
        if title.startswith("Anchor"):
            events = [r.get("anchor_event") for r in run.records]
            counts = ", ".join(f"{events.count(e)} {e}" for e in ANCHOR_EVENTS)
            md += [f"Anchor checks: {counts}.", ""]
        md.append(f"![{title}]({path.relative_to(run.dir).as_posix()})")
    md += ["", "## Best prompts", ""]
    entries = (run.best or {}).get("prompts") or []
    if run.best is None:
        top = run.top_prompt()
        entries = [top] if top else []
        md += [NO_BEST + (" Best dev prompt in metrics.jsonl:" if top else ""), ""]
    if entries:
        md += _table(["#", "prompt", "dev", "test", "test 95% CI", "step"], _prompt_rows(entries))
    out = run.dir / "report.md"
    out.write_text("\n".join(md) + "\n")
    return out


def _chosen_on_dev(runs: list[Run], names: list[str]) -> list[str]:
    """Which finished run's prompt dev picks (the first listed on ties), when all the runs
    choose on the same examples: the way to settle several runs on one task without test."""
    done = [(run, name) for run, name in zip(runs, names) if (run.best or {}).get("best")]
    if len(done) < 2:
        return []
    # what a dev score depends on (the seed draws dev from a pool that has no dev split)
    same = ("task", "data", "seed", "select_on", "target", "answer_tokens")
    if len({tuple(run.config.get(k) for k in same) for run, _ in done}) > 1:
        why = "task, data, seed, target or answer length"
        return ["", f"The runs score dev differently ({why}): dev picks none of them."]
    run, name = max(done, key=lambda pair: pair[0].best["best"]["dev"])
    best, manual = run.best["best"], run.best.get("manual")
    line = f"Chosen on dev: {_text(name)}, {_code(best['prompt'])} (dev {_num(best['dev'])}, "
    line += f"test {_num(best.get('test'))})"
    if manual:
        line += f"; the manual prompt: dev {_num(manual['dev'])}, test {_num(manual.get('test'))}"
    return ["", line + "."]


def write_compare(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Overlay several runs: out_dir/reward.png, out_dir/dev.png and out_dir/compare.md."""
    if not run_dirs:
        raise UserError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    names = [r.dir.resolve().name for r in runs]
    if len(set(names)) < len(names):  # same leaf name (runs/a/seed0, runs/b/seed0): use paths
        names = [str(r.dir) for r in runs]
    labels = [f"{n} ({r.algo})" for n, r in zip(names, runs)]
    md = [f"# Comparison of {len(runs)} runs", ""]
    for key, title, ylabel, file in (
        ("reward_mean", "training reward (mean)", "reward", "reward.png"),
        ("dev_accuracy", "dev accuracy of the evaluation prompt", "dev accuracy", "dev.png"),
    ):
        fig, ax = _figure(title, ylabel)
        for run, label in zip(runs, labels):
            steps, values = run.series(reward_key(run) if key == "reward_mean" else key)
            if steps:
                ax.plot(steps, values, label=label, **(DOTS if key == "dev_accuracy" else {}))
        if ax.lines:
            ax.legend()
            _save(fig, out_dir / file)
            md += [f"![{title}]({file})", ""]
    rows = []
    for run, name in zip(runs, names):
        top, manual = run.returned_prompt() or {}, (run.best or {}).get("manual") or {}
        prompt = _code(top["prompt"]) if top else "–"
        rows.append(
            [
                _text(name),
                _text(run.algo),
                _text(run.config.get("task", "?")),
                f"{run.records[-1]['step']} / {run.config.get('steps', '?')}",
                f"{run.target_calls():,}",
                _duration(run.wall_seconds()),
                prompt + (" (manual)" if top.get("source") == "manual" else ""),
                _num(top.get("dev")),
                _num(top.get("test")),
                _num(manual.get("dev")),
                _num(manual.get("test")),
            ]
        )
    header = ["run", "algo", "task", "steps", "calls", "wall time", "returned prompt", "dev"]
    md += _table(header + ["test", "manual dev", "manual test"], rows)
    md += _chosen_on_dev(runs, names)
    if any(r.best is None for r in runs):
        md += [
            "",
            "Runs without best_prompts.json did not finish: their best prompt is the best "
            "dev prompt in metrics.jsonl and has no test score.",
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "compare.md"
    out.write_text("\n".join(md) + "\n")
    return out
