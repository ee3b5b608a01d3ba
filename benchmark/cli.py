"""The ``compressbench`` console script."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.contrib.logging import logging_redirect_tqdm

from benchmark import __version__
from benchmark.errors import CompressBenchError

if TYPE_CHECKING:
    from benchmark.config import Suite

__all__ = ["main", "prepare_suite"]

logger = logging.getLogger("benchmark")

# Modules that add subcommands with an ``add_commands(subparsers)`` function.
_COMMAND_MODULES = ("benchmark.measure.device_cli", "benchmark.search_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compressbench",
        description="Benchmark neural-network compression methods under identical budgets.",
    )
    parser.add_argument("--version", action="version", version=f"compressbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite and write its rows and tables")
    run.add_argument("suite", help="a built-in suite name (see 'compressbench list') or a path to a .toml file")
    run.add_argument("--quick", action="store_true", help="tiny budget, one seed, first sweep value: a smoke test")
    run.add_argument("--resume", action="store_true", help="skip runs whose rows already exist")
    run.add_argument("--retry-failed", action="store_true", help="with --resume, rerun runs recorded as failed")
    run.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results folder (default: results/SUITE, or runs/quick/SUITE with --quick)",
    )
    run.add_argument("--threads", type=int, default=None, help="torch intra-op threads; overrides the suite")
    run.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bars")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the suite and list its runs, each marked 'run' or, with --resume, 'skip'",
    )
    run.add_argument(
        "--executor",
        choices=("local", "processes", "ray"),
        default="local",
        help="where runs train: in this process (default), in local worker processes, or on a Ray cluster",
    )
    run.add_argument("--workers", type=int, default=2, help="worker processes for --executor processes")
    run.add_argument("--address", default=None, help="Ray cluster address for --executor ray (default: auto)")
    run.add_argument("--max-retries", type=int, default=2, help="retries of a run whose worker process or node died")
    run.add_argument("--gpus", type=float, default=0.0, help="GPUs each Ray task requests")
    run.add_argument("--strict", action="store_true", help="exit with status 1 when any run is recorded as failed")
    run.set_defaults(func=_cmd_run)

    report = commands.add_parser("report", help="write tables, figures and an HTML page from results")
    report.add_argument(
        "results",
        type=Path,
        help="a results folder such as results/default, or with --all a folder of them such as results/",
    )
    report.add_argument(
        "--all",
        action="store_true",
        dest="all_folders",
        help="report every results folder under RESULTS into FOLDER/report and write RESULTS/README.md",
    )
    report.add_argument("--output", type=Path, default=None, help="where to write (default: RESULTS/report)")
    report.add_argument(
        "--format",
        action="append",
        dest="formats",
        default=None,
        metavar="FORMAT",
        help="write only this format, one of md, csv, tex, html, figures; repeat for several (default: all)",
    )
    report.add_argument(
        "--figure-format",
        action="append",
        dest="figure_formats",
        default=None,
        metavar="EXT",
        help="figure file type such as png, svg or pdf; repeat for several (default: png and svg)",
    )
    report.add_argument(
        "--roofline-core",
        default="cortex-a72",
        help="Arm core whose roofline bound is drawn for devices that name no core; 'none' draws none",
    )
    report.set_defaults(func=_cmd_report)

    listing = commands.add_parser("list", help="list tasks, methods, devices and built-in suites")
    listing.set_defaults(func=_cmd_list)

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_commands(commands)
    return parser


def prepare_suite(args: argparse.Namespace) -> tuple[Suite, Path]:
    """Load the suite a command names, apply --quick, --threads and --no-progress, and
    return it with its results folder (--output, or the default for the suite)."""
    from benchmark.config import load_suite
    from benchmark.runner import default_output

    if args.threads is not None and args.threads < 1:
        raise CompressBenchError(f"--threads must be at least 1, got {args.threads}")
    suite = load_suite(args.suite, quick=args.quick)
    training = suite.training
    if args.threads is not None:
        training = dataclasses.replace(training, threads=args.threads)
    if args.no_progress:
        training = dataclasses.replace(training, progress=False)
    suite = dataclasses.replace(suite, training=training)
    return suite, args.output or default_output(suite)


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmark.executors import make_executor
    from benchmark.report import write_report
    from benchmark.runner import SuiteRunner, describe_counts, expand_suite

    _check_run_options(args)
    suite, output = prepare_suite(args)
    executor = None
    if not args.dry_run:
        executor = make_executor(args.executor, args.workers, args.address, args.max_retries, args.gpus)
    runner = SuiteRunner(suite, output, resume=args.resume, retry_failed=args.retry_failed, executor=executor)
    tasks = runner.tasks_available()
    runs = [run for run in expand_suite(suite) if run.task in tasks]
    logger.info(
        "suite %s: %d runs (%d tasks, %d method entries, %d seeds), budget %s, output %s",
        suite.name,
        len(runs),
        len(tasks),
        len(suite.methods),
        len(suite.seeds),
        suite.budget.as_dict(),
        output,
    )
    if args.dry_run:
        runner.check_output()
        for run, _, existing_row in runner.plan(runs):
            action = "run" if existing_row is None else f"skip ({existing_row['status']} row exists)"
            print(f"{run.task.name}\t{run.build_method().label()}\tseed {run.seed}\t{action}")
        return 0

    counts = runner.run(runs)
    paths = write_report(output)
    print(f"{describe_counts(counts)}; rows in {output / 'rows'}")
    for path in paths:
        if path.suffix == ".md":
            print(f"table: {path}")
    return 1 if counts["failed"] and args.strict else 0


def _check_run_options(args: argparse.Namespace) -> None:
    if args.max_retries < 0:
        raise CompressBenchError(f"--max-retries must be 0 or more, got {args.max_retries}")
    if args.retry_failed and not args.resume:
        raise CompressBenchError("--retry-failed only applies with --resume; add --resume")
    if args.address is not None and args.executor != "ray":
        raise CompressBenchError("--address applies to --executor ray only; add --executor ray")


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmark.report import write_all, write_report

    options: dict = {"reference_core": None if args.roofline_core.lower() == "none" else args.roofline_core}
    if args.formats:
        options["formats"] = args.formats
    if args.figure_formats:
        options["figure_formats"] = args.figure_formats

    if args.all_folders:
        if args.output is not None:
            raise CompressBenchError(
                "--output cannot be combined with --all: each folder's report goes to FOLDER/report"
            )
        paths = write_all(args.results, **options)
    else:
        if not args.results.is_dir():
            raise CompressBenchError(f"results folder {args.results} not found; give the --output folder of a run")
        if args.results.name == "rows" and not (args.results / "rows").is_dir():
            raise CompressBenchError(
                f"give the folder that contains rows/, here {args.results.parent}, not rows/ itself"
            )
        if not (args.results / "rows").is_dir():
            raise CompressBenchError(
                f"{args.results} has no rows/ folder; run a suite first with 'compressbench run', "
                "or pass --all for a folder of results folders"
            )
        paths = write_report(args.results, args.output, **options)
    for path in paths:
        print(path)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from benchmark.config import SUITES_DIR
    from benchmark.tasks.registry import DATASETS, TASKS
    from methods.registry import LOAD_FAILURES, load_methods

    print("Tasks:")
    for task in TASKS.values():
        print(f"  {task.name:<24} {task.model} on {DATASETS[task.dataset].description} ({task.metric})")

    print("\nMethods:")
    for name, method_cls in load_methods().items():
        ok, why = method_cls.available()
        status = "" if ok else f"  [unavailable: {why}]"
        print(f"  {name:<24} {method_cls.family.value:<13} {method_cls.summary}{status}")
    for name, why in LOAD_FAILURES.items():
        print(f"  {name:<24} [plugin failed to load: {why}]")

    print("\nDevices:")
    try:
        from benchmark.measure.devices import describe_devices
    except ImportError:
        print("  local                    the host CPU")
    else:
        for line in describe_devices():
            print(f"  {line}")

    print("\nSuites:")
    for path in sorted(SUITES_DIR.glob("*.toml")):
        print(f"  {path.stem}")
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        with logging_redirect_tqdm():
            return int(args.func(args) or 0)
    except CompressBenchError as error:
        print(f"compressbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Rows are written atomically, so only the run in progress is lost.
        print("compressbench: interrupted; finished rows are kept, rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
