"""The ``compressbench search`` and ``compressbench search-worker`` commands.

``search`` runs a suite like ``run`` does, with every Optuna study of the suite (architecture
search runs, and hyperparameter tuning when ``budget.tuning_trials`` is above 0) worked on by
``--workers`` local processes that share one storage. ``search-worker`` joins one study as a
single worker, from this machine or another that reads the same results folder and storage.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmark.errors import ConfigError

__all__ = ["add_commands"]

logger = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``search`` and ``search-worker`` to the console script's subparsers.

    Each handler returns an exit code: 0 on success, 1 when a run is recorded as failed.
    """
    search = subparsers.add_parser(
        "search",
        help="run a suite with its Optuna studies shared by several worker processes",
        description="Run a suite like 'compressbench run'. Each Optuna study (nas.* runs, and "
        "tuning when budget.tuning_trials > 0) is finished by --workers local processes on one "
        "storage. Rerunning with --resume continues interrupted studies.",
    )
    search.add_argument("suite", help="a built-in suite name or a path to a .toml file")
    search.add_argument(
        "--workers", type=int, default=1, help="local worker processes per study (default: 1)"
    )
    search.add_argument(
        "--storage",
        default=None,
        help="Optuna storage shared by the workers: a SQLAlchemy URL (postgresql://user@host/db), "
        "or 'journal:PATH' for a JournalStorage file (default: a SQLite file OUTPUT/optuna.db, "
        "or $COMPRESSBENCH_STORAGE)",
    )
    search.add_argument(
        "--method",
        action="append",
        default=None,
        help="run only this method entry (a name, or a pipeline as 'a+b'); repeat for several",
    )
    search.add_argument(
        "--quick", action="store_true", help="tiny budget, one seed, first sweep value"
    )
    search.add_argument(
        "--resume", action="store_true", help="skip finished runs and continue interrupted studies"
    )
    search.add_argument(
        "--retry-failed", action="store_true", help="with --resume, rerun runs recorded as failed"
    )
    search.add_argument(
        "--output", type=Path, default=None, help="results folder (default as for 'run')"
    )
    search.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads per process"
    )
    search.add_argument(
        "--no-progress", action="store_true", help="hide the per-epoch progress bars"
    )
    search.set_defaults(func=_cmd_search)

    worker = subparsers.add_parser(
        "search-worker",
        help="join one Optuna study as a worker",
        description="Run trials of one study until it contains its number of complete trials. Give "
        "the job file that 'compressbench search' wrote, or the storage and the study name.",
    )
    worker.add_argument(
        "--job", type=Path, default=None, help="a job file, RESULTS/studies/STUDY.job.pkl"
    )
    worker.add_argument("--storage", default=None, help="the study's storage URL or journal:PATH")
    worker.add_argument(
        "--study", default=None, help="the study name, e.g. RUNID.search or RUNID.tuning"
    )
    worker.add_argument(
        "--worker-index",
        type=int,
        default=1,
        help="seeds this worker's sampler apart from the others",
    )
    worker.set_defaults(func=_cmd_search_worker)


def _cmd_search(args: argparse.Namespace) -> int:
    from benchmark.cli import prepare_suite
    from benchmark.report import write_report
    from benchmark.runner import SuiteRunner, describe_counts, expand_suite
    from benchmark.studies import configure_studies

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    configure_studies(storage=args.storage, workers=args.workers)

    suite, output = prepare_suite(args)

    runner = SuiteRunner(suite, output, resume=args.resume, retry_failed=args.retry_failed)
    tasks = runner.tasks_available()
    runs = [run for run in expand_suite(suite) if run.task in tasks]
    if args.method:
        known = {run.entry.name for run in runs}
        unknown = sorted(set(args.method) - known)
        if unknown:
            raise ConfigError(
                f"--method {unknown[0]!r} is not a method entry of suite {suite.name}; "
                f"entries: {', '.join(sorted(known))}"
            )
        runs = [run for run in runs if run.entry.name in args.method or run.entry.name == "dense"]

    logger.info(
        "suite %s: %d runs, %d workers per study, output %s",
        suite.name,
        len(runs),
        args.workers,
        output,
    )
    counts = runner.run(runs)
    write_report(output)
    print(f"{describe_counts(counts)}; rows in {output / 'rows'}")
    return 1 if counts["failed"] else 0


def _cmd_search_worker(args: argparse.Namespace) -> int:
    from benchmark.studies import job_from_study, join_study

    if args.job is None:
        if not (args.storage and args.study):
            raise ConfigError("give --job FILE, or both --storage and --study")
        args.job = job_from_study(args.storage, args.study)
    if not args.job.is_file():
        raise ConfigError(
            f"job file {args.job} not found; start the study with 'compressbench search'"
        )
    ran = join_study(args.job, args.worker_index)
    print(f"completed {ran} trials")
    return 0
