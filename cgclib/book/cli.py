"""`cgc`: list the book's chapters and rerun one with other parameters.

cgc list
cgc run density -p model gpt2-medium -p device cuda
cgc estimate orthogonality -p model gpt2-medium --device-name h200   # its cost, before running it
cgc sweep sweeps/orthogonality-gpt2-sizes.yaml            # list the jobs of a sweep
cgc sweep sweeps/orthogonality-gpt2-sizes.yaml --index 3  # run one (e.g. a Slurm array task)
cgc sweep sweeps/orthogonality-gpt2-sizes.yaml --all      # run them all on a Dask cluster
cgc execute                                                # every chapter into the book's cache (make book)
cgc replicates                                             # every chapter on the other training seeds, shipped
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..paths import project_root
from .chapters import ChapterError, get_chapter, list_chapters, resolve_parameters, run_chapter
from .sweeps import job_command, load_sweep, run_job


def _cmd_list(args) -> int:
    chapters = list_chapters(args.root)
    if args.chapter:
        chapters = {args.chapter: get_chapter(args.chapter, args.root)}
    for chapter in chapters.values():
        print(chapter.name)
        for p in chapter.parameters().values():
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    {p.name} = {p.default!r} ({p.type_name}){help_text}")
    return 0


def _cmd_run(args) -> int:
    try:
        import papermill
    except ImportError:  # pragma: no cover - papermill is a pinned dependency
        print("cgc run needs papermill; install the project with `make install`", file=sys.stderr)
        return 2
    if args.eval_memory_gb is not None:
        from ..evaluation import EVAL_MEMORY_ENV

        os.environ[EVAL_MEMORY_ENV] = str(args.eval_memory_gb)  # the chapter's kernel inherits it
    try:
        result = run_chapter(
            args.chapter,
            [tuple(p) for p in args.parameter or []],
            runs_dir=args.runs_dir,
            root=args.root,
            progress=not args.quiet,
        )
    except papermill.PapermillExecutionError as exc:
        print(f"chapter {args.chapter!r} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", file=sys.stderr)
        print("the claims recorded before the failure are in the run folder's *.incomplete.json", file=sys.stderr)
        return 1
    print(f"executed notebook: {result.notebook}")
    print(f"ledger records:    {result.results}")
    print(f"run folder:        {result.directory}")
    return 0


def _format_count(value: float, unit: str = "") -> str:
    """A count with an SI prefix: 1.2e12 -> '1.20 T'."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def _format_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _cmd_estimate(args) -> int:
    from .. import estimate
    from ..devices import is_device_map_strategy
    from ..models import ModelUnavailableError, resolve_device
    from .validation import check_parameters

    chapter = get_chapter(args.chapter, args.root)
    values = {n: p.default for n, p in chapter.parameters().items()}
    values.update(resolve_parameters(chapter, [tuple(p) for p in args.parameter or []]))
    # a named device is not this machine: the `device` parameter is checked as auto
    check_parameters(args.chapter, {**values, "device": "auto"} if args.device_name else values, args.root)
    try:
        estimate.cost_model(args.chapter)
        if args.device_name:
            dtype = estimate.run_dtype(args.chapter, values["dtype"], None)
            throughput = estimate.named_throughput(args.device_name, dtype)
            where = (
                f"{estimate.device_peak(args.device_name).description}, {dtype}, "
                f"{estimate.ASSUMED_EFFICIENCY:.0%} of its peak dense FLOP/s"
            )
            result = estimate.estimate_chapter(args.chapter, values, dtype)
        else:
            requested = values["device"]
            device = resolve_device("cuda" if is_device_map_strategy(requested) else requested)
            dtype = estimate.run_dtype(args.chapter, values["dtype"], device)
            result = estimate.estimate_chapter(args.chapter, values, dtype)
            throughput = estimate.measured_throughput(result.d_model, dtype, device)
            where = f"this machine ({device}, {dtype}), a matrix product measured here"
    except (estimate.EstimateError, ModelUnavailableError) as exc:
        print(f"cgc: {exc}", file=sys.stderr)
        return 2
    print(f"cost of `{args.chapter}` (empty caches); time at {_format_count(throughput, 'FLOP/s')} on {where}")
    header = ("model", "stage", "variants", "block tokens", "head tokens", "FLOPs", "peak memory", "time")
    rows = [
        (
            s.model,
            s.name,
            str(s.variants),
            _format_count(s.work.block_tokens),
            _format_count(s.work.head_tokens),
            _format_count(s.flops),
            _format_count(s.peak_bytes, "B"),
            _format_seconds(s.flops / throughput),
        )
        for s in result.stages
    ]
    rows.append(
        (
            "total",
            "",
            str(sum(s.variants for s in result.stages)),
            _format_count(sum(s.work.block_tokens for s in result.stages)),
            _format_count(sum(s.work.head_tokens for s in result.stages)),
            _format_count(result.flops),
            _format_count(result.peak_bytes, "B"),
            _format_seconds(result.flops / throughput),
        )
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print("block tokens: tokens x blocks computed; head tokens: tokens through the language-model head")
    print("not counted: " + "; ".join(result.not_covered))
    return 0


def _cmd_sweep(args) -> int:
    import papermill

    sweep = load_sweep(args.sweep, args.root)
    runs_dir = args.runs_dir or args.root / "runs"
    if args.all:
        from .engine import run_sweep

        reports = run_sweep(args.sweep, runs_dir, args.root, args.workers, args.scheduler)
        for report in reports:
            where = report.folder or report.message.strip().splitlines()[-1:]
            print(f"job {report.index}\t{report.status}\t{where}")
        failed = [r for r in reports if r.status == "failed"]
        for report in failed:
            print(f"\njob {report.index} failed:\n{report.message}", file=sys.stderr)
        return 1 if failed else 0
    if args.index is None:
        for i in range(len(sweep.jobs())):
            print(job_command(sweep, i, args.runs_dir) if args.commands else f"{i}\t{sweep.jobs()[i]}")
        return 0
    try:
        outcome = run_job(sweep, args.index, runs_dir, args.root, progress=not args.quiet)
    except papermill.PapermillExecutionError as exc:
        print(f"job {args.index} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    if outcome.skipped:
        print(f"job {args.index}: skipped, a finished run with its parameters exists: {outcome.folder}")
    else:
        print(f"job {args.index}: ran, {outcome.folder}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _cmd_execute(args) -> int:
    from .execution import execute_chapters

    failed = [e for e in execute_chapters(args.root, args.jobs) if e.error is not None]
    for execution in failed:
        print(f"\n{execution.path} failed:\n{execution.error}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_replicates(args) -> int:
    from ..replicates import rebuild

    shipped = rebuild(args.chapter or None)
    print(f"{shipped} replicate runs shipped in data/replicates")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgc", description="Chapters of the CGC research companion.")
    parser.add_argument("--root", type=Path, default=None, help="book root (default: the nearest folder with _toc.yml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="show the chapters and their parameters with defaults")
    p_list.add_argument("chapter", nargs="?", help="show only this chapter")
    p_list.set_defaults(func=_cmd_list)

    p_run = sub.add_parser("run", help="rerun one chapter with other parameters (papermill)")
    p_run.add_argument("chapter")
    p_run.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set a parameter; repeatable"
    )
    p_run.add_argument(
        "--runs-dir", type=Path, default=None, help="where run folders go (default: runs/ under the book root)"
    )
    p_run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p_run.add_argument(
        "--eval-memory-gb",
        type=_positive_float,
        default=None,
        help="GiB the logits of one evaluation batch may take (default 4; sets CGC_EVAL_MEMORY_GB)",
    )
    p_run.set_defaults(func=_cmd_run)

    p_estimate = sub.add_parser(
        "estimate",
        help="the FLOPs, peak memory and time of each stage of a chapter, from the model's config alone",
    )
    p_estimate.add_argument("chapter")
    p_estimate.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set a parameter; repeatable"
    )
    p_estimate.add_argument(
        "--device-name",
        default=None,
        help="time on this device from its peak FLOP/s (h200, h100, a100, l40s, l4, rtx4090) instead of measuring here",
    )
    p_estimate.set_defaults(func=_cmd_estimate)

    p_sweep = sub.add_parser("sweep", help="list the jobs of a sweep file, or run one of them")
    p_sweep.add_argument("sweep", type=Path, help="a sweep file (see sweeps/)")
    p_sweep.add_argument(
        "--index", type=int, default=None, help="run this job (skipped if a finished run with its parameters exists)"
    )
    p_sweep.add_argument(
        "--commands", action="store_true", help="print one `cgc run` command per job instead of the job table"
    )
    p_sweep.add_argument(
        "--all", action="store_true", help="run every job on Dask (a local cluster unless --scheduler is given)"
    )
    p_sweep.add_argument(
        "--workers", type=_positive_int, default=None, help="with --all: local worker processes (default: CPUs)"
    )
    p_sweep.add_argument("--scheduler", default=None, help="with --all: address of a running Dask scheduler")
    p_sweep.add_argument(
        "--runs-dir", type=Path, default=None, help="where run folders go (default: runs/ under the book root)"
    )
    p_sweep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p_sweep.set_defaults(func=_cmd_sweep)

    p_execute = sub.add_parser(
        "execute",
        help="execute every chapter with its defaults into the book's execution "
        "cache, several at once (`make book` does this before rendering)",
    )
    p_execute.add_argument(
        "--jobs", type=_positive_int, default=None, help="chapters at once (default: one per CPU core)"
    )
    p_execute.set_defaults(func=_cmd_execute)

    p_replicates = sub.add_parser(
        "replicates",
        help="execute each chapter on the test beds' other training seeds (where not cached for "
        "this code) and ship the records in data/replicates (`make replicates`)",
    )
    p_replicates.add_argument("chapter", nargs="*", help="only these chapters (default: every one)")
    p_replicates.set_defaults(func=_cmd_replicates)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = args.root or project_root()
    try:
        return args.func(args)
    except ChapterError as exc:
        print(f"cgc: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
