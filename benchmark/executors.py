"""Executors: where the runs of a suite train. The runner alone writes the rows.

- ``local``: in this process, one run at a time (the default).
- ``processes``: N local worker processes, one fresh process per run.
- ``ray``: one Ray task per run on an existing Ray cluster, declaring its CPU and GPU needs.

An executor receives :class:`~benchmark.runner.RunRequest` objects and hands back either the
finished row or, when the worker died on every attempt, the reason as a string. Worker
deaths (a killed process, a lost node) are retried up to ``max_retries`` times. A run that
raises is never retried, because its failure is already a row.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import signal
from collections import deque
from typing import TYPE_CHECKING, Any

from benchmark.errors import ConfigError

if TYPE_CHECKING:
    from benchmark.runner import RunRequest

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]

logger = logging.getLogger(__name__)

Result = dict[str, Any] | str


class Executor:
    """Runs requests; :meth:`wait_any` blocks until at least one has finished."""

    #: How many runs may be in flight at once.
    slots = 1

    def submit(self, key: str, request: RunRequest) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement submit()")

    def wait_any(self) -> list[tuple[str, Result]]:
        raise NotImplementedError(f"{type(self).__name__} must implement wait_any()")

    def close(self) -> None:
        """Release workers; called once when the suite ends or fails."""


class LocalExecutor(Executor):
    """Run each request in this process, synchronously, at submission."""

    def __init__(self) -> None:
        self._done: deque[tuple[str, Result]] = deque()

    def submit(self, key: str, request: RunRequest) -> None:
        from benchmark.runner import execute_run

        self._done.append((key, execute_run(request)))

    def wait_any(self) -> list[tuple[str, Result]]:
        finished = list(self._done)
        self._done.clear()
        return finished


def _worker_main(request: RunRequest, connection: multiprocessing.connection.Connection) -> None:
    from benchmark.runner import execute_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [worker] %(name)s: %(message)s")
    connection.send(execute_run(request))
    connection.close()


@dataclasses.dataclass
class _Attempt:
    request: RunRequest
    process: multiprocessing.process.BaseProcess
    connection: multiprocessing.connection.Connection
    number: int


class ProcessExecutor(Executor):
    """Run each request in a fresh worker process, at most ``workers`` at once.

    A fresh process per run isolates memory and crashes; its start-up (importing torch)
    costs about a second, small against a training run.
    """

    def __init__(self, workers: int, max_retries: int = 2) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"--max-retries must be 0 or more, got {max_retries}")
        self.slots = workers
        self.max_retries = max_retries
        self._context = multiprocessing.get_context("spawn")
        self._attempts: dict[str, _Attempt] = {}

    def submit(self, key: str, request: RunRequest, number: int = 1) -> None:
        request = _without_progress_bars(request)
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_worker_main, args=(request, sender), name=f"compressbench-{key}")
        process.start()
        sender.close()
        self._attempts[key] = _Attempt(request, process, receiver, number)

    def wait_any(self) -> list[tuple[str, Result]]:
        waitables = {}
        for key, attempt in self._attempts.items():
            waitables[attempt.connection] = key
            waitables[attempt.process.sentinel] = key
        ready = multiprocessing.connection.wait(list(waitables))
        finished = []
        for key in {waitables[item] for item in ready}:
            result = self._collect(key)
            if result is not None:
                finished.append((key, result))
        return finished

    def _collect(self, key: str) -> Result | None:
        attempt = self._attempts[key]
        row = None
        try:
            if attempt.connection.poll():
                row = attempt.connection.recv()
        except (EOFError, OSError):
            row = None
        if row is not None:
            attempt.process.join()
            del self._attempts[key]
            return row

        attempt.process.join(timeout=0.1)
        if attempt.process.exitcode is None:
            return None  # the pipe closed first; the process is still exiting
        del self._attempts[key]
        reason = _describe_exit(attempt.process.exitcode)
        if attempt.number <= self.max_retries:
            logger.warning(
                "worker for run %s %s; retrying (attempt %d of %d)",
                key,
                reason,
                attempt.number + 1,
                self.max_retries + 1,
            )
            self.submit(key, attempt.request, attempt.number + 1)
            return None
        return f"WorkerLost: the worker process {reason} on all {attempt.number} attempts"

    def close(self) -> None:
        for attempt in self._attempts.values():
            attempt.process.kill()
            attempt.process.join()
        self._attempts.clear()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code} without a result"


def _without_progress_bars(request: RunRequest) -> RunRequest:
    # Several workers drawing bars on one terminal garble it; workers log epochs instead.
    training = dataclasses.replace(request.suite.training, progress=False)
    return dataclasses.replace(request, suite=dataclasses.replace(request.suite, training=training))


def _ray_execute(request: RunRequest) -> dict[str, Any]:
    from benchmark.runner import execute_run

    return execute_run(request)


class RayExecutor(Executor):
    """Run each request as a Ray task on the cluster at ``address``.

    Each task declares ``cpus`` (default: the suite's torch threads) and ``gpus``. Ray
    retries tasks whose worker died, up to ``max_retries`` times. Every node must have
    CompressBench and its datasets installed; a shared filesystem for the results folder
    lets dense checkpoints train once across nodes.
    """

    def __init__(
        self, address: str, max_retries: int = 2, cpus: float | None = None, gpus: float = 0.0, slots: int | None = None
    ) -> None:
        try:
            import ray
        except ImportError as error:
            raise ConfigError("--executor ray needs Ray; install it with pip install 'compressbench[ray]'") from error
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        resources = ray.cluster_resources()
        self.cpus = cpus
        self.gpus = gpus
        self.max_retries = max_retries
        per_task = cpus or 1.0
        self.slots = slots or max(1, int(resources.get("CPU", 1) // per_task))
        self._refs: dict[Any, str] = {}
        logger.info("connected to Ray at %s: %s; up to %d runs at once", address, resources, self.slots)

    def submit(self, key: str, request: RunRequest) -> None:
        request = _without_progress_bars(request)
        cpus = self.cpus or float(request.suite.training.threads or 1)
        remote = self._ray.remote(_ray_execute).options(
            num_cpus=cpus,
            num_gpus=self.gpus,
            max_retries=self.max_retries,
            retry_exceptions=False,
            name=f"compressbench-{key}",
        )
        self._refs[remote.remote(request)] = key

    def wait_any(self) -> list[tuple[str, Result]]:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        finished = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                finished.append((key, self._ray.get(ref)))
            except self._ray.exceptions.RayError as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                finished.append(
                    (key, f"WorkerLost: {type(error).__name__} after {self.max_retries + 1} attempts: {reason}")
                )
        return finished

    def close(self) -> None:
        for ref in self._refs:
            self._ray.cancel(ref, force=True)
        self._refs.clear()


EXECUTORS = ("local", "processes", "ray")


def make_executor(
    name: str, workers: int = 1, address: str | None = None, max_retries: int = 2, gpus: float = 0.0
) -> Executor:
    """Build the executor a command line asked for."""
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        return ProcessExecutor(workers, max_retries)
    if name == "ray":
        return RayExecutor(address or "auto", max_retries=max_retries, gpus=gpus)
    raise ConfigError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
