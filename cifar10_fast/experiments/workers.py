"""The worker processes of a group: --parallel of them, each on a GPU of its own (CUDA_VISIBLE_DEVICES
names one) or, on a CPU, its share of the cores; their output one log whose every line says which
worker wrote it. Ctrl-C or SIGTERM stops them all: each keeps its trial's last finished epoch, and
the group says in one line what each kept (runner.py)."""
import multiprocessing
import os
import signal
import sys
from contextlib import contextmanager

from cifar10_fast.core.groups import visible_gpus
from cifar10_fast.core.internals import exit_without_teardown
from cifar10_fast.core.lifecycle import (
    INTERRUPTED,
    hangups_ignored,
    let_go,
    outliving_the_terminal,
    stopping_on_signals,
)
from cifar10_fast.core.startup import imports_done
from cifar10_fast.experiments.study import Group

STOP_WAIT_S = 120  # a worker saves its checkpoint and goes; one that does not by then is killed


class Prefixed:
    """A stream that begins each line with `prefix`: several workers' lines, told apart."""

    def __init__(self, stream, prefix):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text):
        lines = text.split("\n")
        written = "\n".join(f"{self.prefix}{line}" if line and (i or self.at_line_start) else line
                            for i, line in enumerate(lines))
        self.at_line_start = text.endswith("\n")
        self.stream.write(written)
        return len(text)

    def isatty(self):
        return False  # no progress bars: a line per epoch, each with its prefix

    def __getattr__(self, name):
        return getattr(self.stream, name)


def train_trials(group, train, data, worker=0):
    """This process trains the group's trials on `data` until none is left; a stop ends the trial it
    trains with its checkpoint saved, and is raised on (KeyboardInterrupt)."""
    with stopping_on_signals():
        try:
            group.work(train, data, worker)
        finally:
            let_go()


def worker_main(config, group_dir, train, data_of, worker, threads):
    """A worker process: its lines prefixed, its share of the cores, the trials it can take; its
    exit status 130 where a stop ended it (the group says what it kept), else what its trials left."""
    imports_done()  # `train`'s module is loaded: the script's, with the collector off (startup.flags_first)
    sys.stdout, sys.stderr = (Prefixed(stream, f"[worker {worker}] ") for stream in (sys.stdout, sys.stderr))
    if threads:
        import torch  # loaded already, by `train`'s module
        torch.set_num_threads(threads)
    try:
        with outliving_the_terminal():
            train_trials(Group(config, group_dir), train, data_of(config), worker)
    except KeyboardInterrupt:
        exit_without_teardown(INTERRUPTED)
    exit_without_teardown(0)  # every trial's files are written: a second of teardown would only delay the group


def run_workers(config, group_dir, train, data, data_of, count):
    """`count` worker processes train the trials of the group of `config` in `group_dir` (each opens
    its study itself and sets its data up with `data_of`), or this process, on `data`, where it is
    one. Where
    they run on GPUs, each sees one (the next of those visible, in turn); on a CPU each gets its
    share of the cores. Returns when all have ended; a stop is raised on (KeyboardInterrupt) once
    each has saved what it had."""
    if count == 1:
        return train_trials(Group(config, group_dir), train, data)
    gpus = visible_gpus() if config.device != "cpu" else []
    threads = None if gpus else max(1, len(os.sched_getaffinity(0)) // count)
    context = multiprocessing.get_context("spawn")  # a fresh process: CUDA set up by each, for its own GPU
    workers = []
    for worker in range(count):
        environment = {"CUDA_VISIBLE_DEVICES": gpus[worker % len(gpus)]} if gpus else {}
        workers.append(start_worker(context, worker_main, (config, group_dir, train, data_of, worker, threads),
                                    environment))
    try:
        with stopping_on_signals():
            for process in workers:
                process.join()
    except KeyboardInterrupt:
        stop(workers)
        raise
    failed = [(worker, process.exitcode) for worker, process in enumerate(workers)
              if process.exitcode not in (0, INTERRUPTED)]
    if failed:
        worker, status = failed[0]
        raise WorkerFailed(worker, status)


def start_worker(context, target, args, environment):
    """A worker process running `target(*args)`, started with `environment` added to this one's, deaf
    to a closed terminal (SIGHUP) until it sets its own handler: it loads torch for seconds first."""
    with changed_environment(environment), hangups_ignored():
        process = context.Process(target=target, args=args)
        process.start()
    return process


class WorkerFailed(Exception):
    """A worker that ended otherwise than by finishing or by a stop: killed outright, or with an
    error its own line said."""

    def __init__(self, worker, status):
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"ended with exit status {status}"
        super().__init__(f"worker {worker} {how}")
        self.worker, self.status = worker, status


def stop(workers):
    """Every worker stopped: SIGTERM to those that a terminal's Ctrl-C did not reach (a scheduler
    signals this process alone), then waited for while each saves its checkpoint."""
    for process in workers:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    for process in workers:
        process.join(STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()


@contextmanager
def changed_environment(changes):
    """os.environ with `changes` inside the block: what a process started inside inherits."""
    before = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

