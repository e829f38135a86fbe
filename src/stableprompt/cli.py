"""Command line: `stableprompt train | eval | transfer | models | tasks | report | compare`.

Every `train` flag is a field of `TrainConfig` (dashes for underscores), so a YAML config and the
command line say the same things; flags given on the command line override the YAML.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from argparse import SUPPRESS
from pathlib import Path

from stableprompt import __version__
from stableprompt.config import FIELDS, TrainConfig, flag, parse_value
from stableprompt.errors import UserError

WRONG_SHOWN = 5  # wrong answers `eval` prints for a generation task


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and choices from its metadata. Values go through the
    config's own parser (`parse_value`), so a bad flag gets the same one-line error (exit 2) as a
    bad YAML key, instead of argparse's usage dump."""
    for name, f in FIELDS.items():
        if name == "extra":  # a mapping: YAML only
            continue
        choices = f.metadata.get("choices")
        text = f.metadata["help"]
        if choices and not all(c in text for c in choices):  # else the help already names them
            text += f"; {' | '.join(choices)}"
        if f.default is not None:
            text += f" (default: {f.default})"
        text = text.replace("%", "%%")  # argparse formats help with %
        if isinstance(f.default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag(name), dest=name, action=action, default=SUPPRESS, help=text)
            continue
        bare = f.metadata.get("bare")
        parser.add_argument(
            flag(name),
            dest=name,
            type=functools.partial(parse_value, name),
            default=SUPPRESS,
            metavar="{" + ",".join(choices) + "}" if choices else f.type.split(" ")[0].upper(),
            help=text,
            **({"nargs": "?", "const": bare} if bare is not None else {}),
        )


def cmd_train(args: argparse.Namespace) -> int:
    from stableprompt.contexts import build_context
    from stableprompt.rundir import Interrupted, check_run_dir
    from stableprompt.trainer import Trainer

    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    if args.resume:
        run = Path(args.resume)
        if not (run / "config.yaml").is_file():
            raise UserError(
                f"no run to resume in {run}: config file not found "
                "(pass --resume the --out directory of an earlier train run)"
            )
        config = TrainConfig.from_yaml(run / "config.yaml", **{**overrides, "out": str(run)})
    elif args.config:
        config = TrainConfig.from_yaml(args.config, **overrides)
    else:
        config = TrainConfig.from_dict(overrides)
    check_run_dir(Path(config.out), bool(args.resume), args.overwrite)  # before loading models
    ctx = build_context(config)
    trainer = Trainer(config, ctx, progress=not args.no_progress)
    try:
        summary = trainer.train(resume=bool(args.resume), overwrite=args.overwrite)
    except Interrupted as stopped:
        print(
            f"{stopped}; checkpoint saved in {stopped.out}/checkpoints. Continue with: "
            f"stableprompt train --resume {stopped.out}",
            file=sys.stderr,
        )
        return 130
    print(format_summary(summary, config.out))
    return 0


def format_summary(summary: dict, out: str) -> str:
    """The end of a run: the learned prompts beside the manual prompt, dev and test with the
    test's 95% interval, the label words, the calls spent and where the files are."""
    metric = summary.get("metric", "accuracy")
    rows = [("learned" if i == 0 else "", e) for i, e in enumerate(summary["prompts"])]
    if summary.get("manual"):
        rows.append(("manual", summary["manual"]))
    width = min(60, max([len(repr(e["prompt"])) for _, e in rows] + [12]))
    lines = [f"{'':8}{'prompt':<{width}}  {'dev':>6}  {'test':>6}  test 95% CI   ({metric})"]
    for kind, e in rows:
        # --demonstrations: the manual prompt is in the template, and its row shows none
        prompt = repr(e["prompt"]) if e["prompt"] else "(none shown)"
        if e.get("pairs"):  # prompts made of solved pairs: how many, before the text
            prompt = f"({e['pairs']} pairs) {prompt}"
        prompt = prompt if len(prompt) <= width else prompt[: width - 3] + "..."
        test = f"{e['test']:6.3f}" if "test" in e else f"{'-':>6}"
        ci = "[{:.3f}, {:.3f}]".format(*e["test_ci95"]) if "test_ci95" in e else ""
        lines.append(f"{kind:<8}{prompt:<{width}}  {e['dev']:6.3f}  {test}  {ci}")
    if summary.get("label_words"):  # a uniform guess over the classes, for scale
        chance = 1 / len(summary["label_words"])
        label = f"(a uniform guess over {len(summary['label_words'])} labels)"
        lines.append(f"{'chance':<8}{label:<{width}}  {chance:6.3f}  {chance:6.3f}")
    if summary.get("label_words"):
        search = summary.get("label_word_search") or {}
        how = " (auto: best for the manual prompt on train+dev)" if search.get("setting") else ""
        lines.append("label words: " + ", ".join(w.strip() for w in summary["label_words"]) + how)
    for e in summary["prompts"]:  # words re-chosen for a pool prompt (--refit-label-words)
        if e.get("label_words") and e["label_words"] != summary.get("label_words"):
            words = ", ".join(w.strip() for w in e["label_words"])
            lines.append(f"  {e['prompt'][:40]!r} is scored with its own words: {words}")
    pooled = summary.get("select_on") == "dev+train"
    if pooled:
        lines.append("dev: on dev and the train examples a prompt does not show (--select-on)")
    check = (summary.get("best") or {}).get("check")
    if check:  # why the run returns what it returns
        where = "dev and train" if pooled else "dev"
        odds = f"higher on {check['wins']} {where} examples, lower on {check['losses']}"
        if summary["best"]["source"] == "manual":
            lines.append(
                f"returned: the manual prompt. The learned one scored {odds} (sign test p = "
                f"{check['p']:.2f}): no evidence it is better (--replace-manual-p)"
            )
        else:
            lines.append(f"returned: the learned prompt; it scored {odds} (p = {check['p']:.3f})")
    test_check = summary.get("test_check")
    if test_check:  # the same paired test on test: reported, it chooses nothing
        lines.append(
            f"on test the learned prompt scored higher on {test_check['wins']} examples, lower on "
            f"{test_check['losses']} than the manual one (sign test p = {test_check['p']:.3f})"
        )
    reliability = summary.get("dev_reliability")
    if reliability is not None:  # how much the choice on dev is worth
        more = "" if pooled else "; more examples to choose on, e.g. --select-on dev+train, may"
        lines.append(
            f"dev reliability over the {summary['dev_prompts_scored']} prompts scored: "
            f"{reliability:.2f} (split-half; near 0, dev cannot tell them apart, so the best "
            f"dev score is luck and more search will not help{more})"
        )
    if summary.get("answer_tokens") and summary.get("shows_pairs") is False:  # generation
        lines.append(
            "the target read no solved pairs: on the instruction-induction tasks measured, five "
            "train pairs before each input (--algo in-context --num-shots 5, a few hundred "
            "calls) beat every learned instruction, and random sets of 20 (--algo random "
            "--demonstrations 20) did best (docs/RESULTS.md)"
        )
    agent = summary.get("agent") or {}
    if summary.get("conditioning") == "input" and "seconds_per_input" in agent:
        lines.append(
            f"{summary['prompts'][0]['prompt']}: {agent['seconds_per_input']:.3f} s of agent "
            f"generation per test input; e.g. {agent['rows'][0]['input'][:30]!r} -> "
            f"{agent['rows'][0]['prompt'][:50]!r}"
        )
    lines.append(
        f"{summary['steps']} steps; target calls: {summary['target_calls']:,} for training and "
        f"dev, {summary.get('test_calls', 0):,} for the final scoring"
        + (f"; {summary['seconds'] / 60:.1f} min" if summary.get("seconds") else "")
        + (f"; local models in {summary['dtype']}" if summary.get("dtype") else "")
    )
    lines.append(
        f"run written to {out} (best_prompts.json, metrics.jsonl; `stableprompt report "
        f"{out}` for plots)"
    )
    return "\n".join(lines)


def _naturalness(prompt: str, reference_lm: str, dtype: str) -> dict:
    """Print and return the prompt's perplexity and English-word share under `reference_lm`."""
    import math

    from stableprompt.models.loading import load_lm
    from stableprompt.naturalness import naturalness

    if reference_lm.lower() == "none":
        return {}
    lm, tokenizer = load_lm(reference_lm, dtype=dtype, shared=True)
    values = naturalness([prompt], lm, tokenizer)[0]
    ppl, share = values["perplexity"], values["english_word_share"]
    print(f"perplexity {ppl:.2f} under {reference_lm}  english-word share {share:.2f}")
    # JSON has no NaN (an empty prompt): write null instead
    clean = {k: None if math.isnan(v) else v for k, v in values.items()}
    return {"reference_lm": reference_lm, **clean}


def cmd_eval(args: argparse.Namespace) -> int:
    from stableprompt.contexts import build_context

    if args.agent is not None:
        return eval_agent(args)
    settings = (
        "task",
        "data",
        "target",
        "template",
        "label_words",
        "answer_tokens",
        "dtype",
        "seed",
    )
    config = TrainConfig.from_dict({k: getattr(args, k) for k in settings})
    ctx = build_context(config, required=(args.split,))
    ctx.scorer.progress = not args.no_progress  # a test set takes minutes on a CPU
    task, search = ctx.task, ctx.label_search
    prompt = task.manual_prompt if args.prompt is None else args.prompt
    report = ctx.report(prompt, args.split)
    print(f"task {task.name}  split {args.split} (n={report['n']})  target {args.target}")
    print(f"prompt {prompt!r}")
    _print_scores(ctx, report)
    natural = _naturalness(prompt, args.reference_lm, args.dtype)
    result = {"task": task.name, "split": args.split, "target": args.target, "prompt": prompt}
    result |= {"template": ctx.template, "label_words": list(task.label_words)}
    if ctx.generation:
        result["answer_tokens"] = ctx.max_new_tokens  # where answers were cut
        result["rows"] = _answer_rows(ctx, prompt, args.split)
    if args.versus is not None:
        result["versus"] = _versus(ctx, prompt, args.versus, args.split)
    _write_json(args.out, result | {"label_word_search": search, **report, **natural})
    return 0


def eval_agent(args: argparse.Namespace) -> int:
    """`eval --agent RUN_DIR`: reload an input-conditioned run's agent (its best weights by dev,
    from the checkpoint), write a prompt for every input of the split and score each on its own
    input; prints the agent's generation seconds per input and sample rows."""
    from stableprompt.algorithms import build_algorithm
    from stableprompt.algorithms.conditioned import PER_INPUT, WRITE_BATCH
    from stableprompt.contexts import build_context
    from stableprompt.rundir import best_words, latest_checkpoint, read_checkpoint

    run = Path(args.agent)
    if args.prompt is not None or args.versus is not None:
        raise UserError("eval takes --prompt (and --versus) or --agent, not both (drop one)")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a training run (no config.yaml); pass a `train --out` dir")
    config = TrainConfig.from_yaml(run / "config.yaml")
    if config.conditioning != "input":
        raise UserError(
            f"{run} learned one prompt for the task, not an agent that writes one per input "
            "(score its best prompt with --prompt)"
        )
    best = run / "best_prompts.json"  # the run's label words: no new search
    words = best_words(json.loads(best.read_text())) if best.is_file() else []
    ctx = build_context(config, required=("train", args.split), label_words=tuple(words) or None)
    algorithm = build_algorithm(config, ctx)
    algorithm.load_tensors(read_checkpoint(latest_checkpoint(run))[0])
    report = algorithm.report(PER_INPUT, args.split)
    print(f"task {ctx.task.name}  split {args.split} (n={report['n']})  target {config.target}")
    print(f"agent {run}: a prompt per input, from its best weights by dev")
    _print_scores(ctx, report)
    seconds = report["seconds_per_input"]
    print(f"agent generation: {seconds:.3f} s per input (greedy, {WRITE_BATCH} inputs a batch)")
    for row in report["rows"][:5]:
        print(f"  input {row['input'][:40]!r}  prompt {row['prompt'][:50]!r}")
        print(f"    -> {row['prediction'][:30]!r} (gold {row['gold'][:30]!r})")
    result = {"task": ctx.task.name, "split": args.split, "target": config.target}
    result |= {"agent": str(run), "conditioning": "input", "template": ctx.template}
    _write_json(args.out, result | {"label_words": list(ctx.task.label_words), **report})
    return 0


def _answer_rows(ctx, prompt: str, split: str) -> list[dict]:
    """A generation task's answers to `prompt`, input by input (cache hits: the report has just
    generated them), for --out; the first few wrong ones are printed, to show how it fails."""
    examples = ctx.splits[split]
    answers, scores = ctx.answers([(prompt, ex) for ex in examples])
    rows = [
        {"input": ex.text, "prediction": answer.strip(), "gold": ex.answers[0], "score": score}
        for ex, answer, score in zip(examples, answers, scores.tolist(), strict=True)
    ]
    wrong = [row for row in rows if row["score"] < 1.0]
    if wrong:
        print(f"wrong answers ({len(wrong)} of {len(rows)}; all answers in --out), the first few:")
    for row in wrong[:WRONG_SHOWN]:
        answer, gold = row["prediction"][:30], row["gold"][:30]
        print(f"  input {row['input'][:40]!r} -> {answer!r} (gold {gold!r})")
    return rows


def _versus(ctx, prompt: str, baseline: str, split: str) -> dict:
    """`eval --versus`: the baseline scored on the same examples, and the paired sign test that
    `prompt` is better (the test a run's check makes on dev)."""
    from stableprompt.selection import against_manual

    report = ctx.report(baseline, split)
    check = against_manual(*ctx.example_scores([prompt, baseline], split))
    print(f"versus {baseline!r}")
    _print_scores(ctx, report)
    print(
        f"the prompt scored higher on {check['wins']} examples, lower on {check['losses']} "
        f"(one-sided sign test p = {check['p']:.4f}; the rest tie)"
    )
    return {"prompt": baseline, "accuracy": report["accuracy"], "ci95": report["ci95"], **check}


def _print_scores(ctx, report: dict) -> None:
    """The metric with its 95% interval, recall per class and style-transfer measures."""
    lo, hi = report["ci95"]
    print(f"{ctx.metric} {report['accuracy']:.4f}  95% CI [{lo:.4f}, {hi:.4f}]")
    for word, recall in zip(ctx.task.label_words, report["per_class_recall"]):  # generation: none
        print(f"  recall {word.strip():>12}: " + ("n/a" if recall is None else f"{recall:.4f}"))
    for key in ("content", "style", "fluency", "joint", "gm", "perplexity", "bleu", "self_bleu"):
        if key in report:  # style transfer
            print(f"  {key:>10}: {report[key]:.4f}")


def _write_json(out: str | None, result: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")


def cmd_transfer(args: argparse.Namespace) -> int:
    from stableprompt.transfer import format_matrix, transfer_matrix

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    result = transfer_matrix(
        args.run_dirs, targets, args.task, args.data, args.split, args.dtype, args.learned
    )
    print(format_matrix(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from stableprompt.models.loading import ALIASES, is_cached, resolve_dtype

    dtype = resolve_dtype(args.dtype)
    for alias in ALIASES.values():
        state = "cached" if is_cached(alias, dtype) else "not cached (fetched on first use)"
        print(f"{alias.name:<14} {state:<36} {alias.note}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from stableprompt.tasks import get_task, list_tasks

    rows = []
    for name in list_tasks():
        task = get_task(name)
        scored_by = task.metric or ", ".join(w.strip() for w in task.label_words)
        rows.append((name, task.kind, repr(task.template), scored_by))
    rows.append(("textual-inversion", "image", repr("{prompt}"), "clip_similarity"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]  # long names stay aligned
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from stableprompt.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from stableprompt.report import write_compare

    print(f"wrote {write_compare(args.run_dirs, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stableprompt", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"stableprompt {__version__}")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a prompt agent (sql, sparse-sql, ppo, appo)")
    train.add_argument("--config", help="YAML file of TrainConfig fields")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (else refused)"
    )
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval", help="score one prompt on a task split (or the prompts an agent writes per input)"
    )
    ev.add_argument("--task", default="demo")
    ev.add_argument("--data", default=None, help="data dir/file/hf:name (default: demo set)")
    ev.add_argument("--prompt", default=None, help="the prompt (default: the task's manual one)")
    ev.add_argument(
        "--versus",
        default=None,
        metavar="PROMPT",
        help="also score this prompt (e.g. yours) and test, paired on each example, whether "
        "--prompt beats it (sign test)",
    )
    ev.add_argument(
        "--agent",
        default=None,
        metavar="RUN_DIR",
        help="a --conditioning input run: its agent writes a prompt for each input of --split "
        "(task, data, target and label words come from the run)",
    )
    ev.add_argument("--target", default="smollm2-135m")
    ev.add_argument("--template", default=None)
    ev.add_argument(
        "--label-words",
        default="auto",
        help="auto (chosen for the manual prompt on train+dev) | task | comma-separated words",
    )
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    answer_tokens = FIELDS["answer_tokens"]  # the train option's default and help
    ev.add_argument(
        "--answer-tokens",
        type=int,
        default=answer_tokens.default,
        help=answer_tokens.metadata["help"],
    )
    ev.add_argument("--dtype", default="auto")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="write the result as JSON here")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument(
        "--reference-lm",
        default="smollm2-135m",
        help="LM for the prompt's perplexity and English-word share ('none' skips both)",
    )
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser("transfer", help="score the best prompt of each run on several targets")
    tr.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished train --out dirs")
    tr.add_argument("--targets", required=True, help="comma-separated target LMs")
    tr.add_argument("--task", default=None, help="override the runs' task")
    tr.add_argument("--data", default=None, help="override the runs' data")
    tr.add_argument("--split", default="test", choices=["train", "dev", "test"])
    tr.add_argument("--dtype", default="auto")
    tr.add_argument("--out", default=None, help="write the matrix as JSON here")
    tr.add_argument(
        "--learned",
        action="store_true",
        help="each run's best learned prompt, also where the run returned its manual prompt",
    )
    tr.set_defaults(func=cmd_transfer)

    models = sub.add_parser("models", help="list built-in model aliases and their cache state")
    models.add_argument("--dtype", default="auto")
    models.set_defaults(func=cmd_models)
    tasks = sub.add_parser("tasks", help="list registered tasks")
    tasks.set_defaults(func=cmd_tasks)

    report = sub.add_parser(
        "report", help="write RUN_DIR/report.md (summary, best prompts; plots in RUN_DIR/report/)"
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a train run")
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser("compare", help="overlay the curves of several runs")
    compare.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="train run directories")
    compare.add_argument(
        "--out", default="compare", help="write compare.md and its plots here (default: ./compare)"
    )
    compare.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(argv)  # flag values go through the config parser: UserError
        if args.command is None:  # `stableprompt` alone: say what it can do
            parser.print_help()
            return 0
        return args.func(args)
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a training loop: nothing half-written to save
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
