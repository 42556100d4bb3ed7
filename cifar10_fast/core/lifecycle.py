"""A run's life in its folder: one process at a time, and a stop at any moment that says what it kept.

The process that trains a run folder holds it through a lock file in it (.lock, which names the
process): a second `--resume` of the same run is refused, naming the first, instead of both
training into one folder. The kernel drops the lock when the process ends, however it ends.

Ctrl-C, or SIGTERM as a job scheduler sends it, stops a run at any moment with one line and exit
status 130 (for both signals: one status that says "stopped, and this is what was kept"). The
line is read off the run folder, not off the phase the signal came in, so it is true however far
the run got: a checkpoint.json of the finished fit (--resume writes the outputs without training),
one of the last finished epoch (--resume continues from it), or none (nothing to resume). The first
signal stops the run; later ones are ignored while it saves what it has, so that a second Ctrl-C
cannot cut a checkpoint short. A failure of the machine (a full disk, a folder made read-only)
once a checkpoint exists says how to resume too.

Nothing here loads torch: `--resume` of a folder in use is refused before anything loads.
"""
import importlib.util
import os
import signal
import socket
import stat
import sys
import threading
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from cifar10_fast.core.errors import BadInput, command_to_retype, counted, shell_path
from cifar10_fast.core.run_folder import CONFIG, LOCK, REPORT, epochs_logged, is_range_test, read_progress

TRAINER = Path(importlib.util.find_spec("train_fastai").origin)  # found, not imported: it loads torch
INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C or SIGTERM
NOTHING_TO_RESUME = "interrupted before training: nothing to resume"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often, at most, the fit writes a checkpoint at an epoch's end with no signal to ask for one:
# what a run killed outright (SIGKILL, out of memory, power loss) resumes from. A GPU run of the
# recipe (24 epochs in seconds) never writes one, where a file of weights and Adam state (75 MiB:
# three fp32 copies of 6.6 M parameters) at every epoch would add to each epoch of well under a
# second (how much: not measured yet). A CPU run, minutes an epoch, loses at most this much.
CHECKPOINT_EVERY_S = 60


class SetUpInterrupted(Exception):
    """Ctrl-C or SIGTERM while the data was unpacked or decoded, after cleaning up: the message
    says what was kept and how to go on."""


class GroupInterrupted(Exception):
    """Ctrl-C or SIGTERM while a group's workers trained, once each has saved what it had: the
    message says what the group kept and how to go on."""


class RunFolderInUse(BadInput):
    """Another process holds the run folder."""


class Held:
    """The run folder this process holds (one at a time) and its lock."""
    run_dir = lock = None


def trainer_as_run():
    """train_fastai.py as the user ran it (the path they typed, which may pass through links), or
    this checkout's where it was called from Python (the bench, the tests)."""
    script = getattr(sys.modules["__main__"], "__file__", None)
    return Path(script) if script and Path(script).name == TRAINER.name else TRAINER


def resume_command(run_dir):
    """The command that resumes `run_dir`, quoted for a POSIX shell: it pastes and runs as printed."""
    return f"{command_to_retype(trainer_as_run())} --resume {shell_path(run_dir)}"


def main_process():
    """Whether this is the one process of a run, or the main one of several (the others write to
    scratch folders, and hold none)."""
    return int(os.environ.get("RANK", 0)) == 0


def hold(run_dir):
    """Hold `run_dir` for this process, letting go of the one it held before (a group trains its
    runs one after another); refused, naming the holder, where another process holds it."""
    if not main_process() or Held.run_dir == Path(run_dir):
        return
    let_go()
    lock = FileLock(Path(run_dir) / LOCK, blocking=False, on_acquired=write_holder)
    try:
        lock.acquire()
    except Timeout:
        holder = (Path(run_dir) / LOCK).read_text().strip() or "another process"
        raise RunFolderInUse(f"{run_dir} is in use by {holder}: one process at a time trains a run folder; "
                             "wait for that one to end, or stop it, then resume") from None
    except OSError as e:
        e.filename = e.filename or str(Path(run_dir) / LOCK)
        raise
    Held.run_dir, Held.lock = Path(run_dir), lock


def write_holder(fd):
    """The lock file's text, for a process refused it: who holds the folder, and since when."""
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (since {datetime.now():%Y-%m-%d %H:%M:%S})\n"
             .encode())


def let_go():
    """Let go of the run folder this process holds, if any, and remove it where it is empty. The lock
    file goes first, while held: a process that opened it meanwhile finds it gone and starts again
    on a new one (filelock checks)."""
    if Held.lock is not None:
        (Held.run_dir / LOCK).unlink(missing_ok=True)
        Held.lock.release()
        with suppress(OSError):  # a run folder left empty by a run that failed at once: nothing to keep
            Held.run_dir.rmdir()
    Held.run_dir = Held.lock = None


def refuse_if_held(run_dir):
    """Refuse at once a run folder another process holds (the run holds it for good once set up)."""
    hold(run_dir)
    let_go()


def what_it_kept(run_dir):
    """One line: what `run_dir` keeps of a run stopped now, and how to go on."""
    if run_dir is None:
        return NOTHING_TO_RESUME
    progress = read_progress(run_dir)
    if progress and progress.get("fit_done"):
        return (f"interrupted after the fit: its {counted(progress['epochs_done'], 'epoch')} and weights are saved in "
                f"{run_dir}, not yet all its outputs. Resume with: {resume_command(run_dir)}")
    if progress:
        done = progress["epochs_done"]
        saved = "epoch 1 is" if done == 1 else f"epochs 1-{done} are"
        return f"interrupted; {saved} saved in {run_dir}. Resume with: {resume_command(run_dir)}"
    if (run_dir / REPORT).is_file():
        return f"interrupted after {run_dir} was finished: it is whole"
    if is_range_test(run_dir):
        return f"interrupted in the LR range test: nothing to resume in {run_dir}; start it again"
    return f"interrupted before its first epoch finished: nothing to resume in {run_dir}; start the run again"


def nothing_to_resume(run_dir):
    """Why `run_dir`, which holds no checkpoint.json, cannot be resumed, and what to do instead."""
    if not (run_dir / CONFIG).is_file():
        return f"{run_dir} holds no checkpoint.json and no config.json: give the folder of an interrupted run"
    if (run_dir / REPORT).is_file():
        return f"{run_dir} holds no checkpoint.json: its run finished, so there is nothing to resume"
    if is_range_test(run_dir):
        return f"{run_dir} holds no checkpoint.json: it is an LR range test (--find-lr), which has nothing to resume"
    epochs = epochs_logged(run_dir)
    if epochs:
        return (f"{run_dir} holds no checkpoint.json: its run was killed (SIGKILL, out of memory, power loss) or "
                f"crashed after {counted(epochs, 'epoch')}, before it saved one (a run saves one on Ctrl-C or "
                f"SIGTERM, and every {CHECKPOINT_EVERY_S} s of fitting); nothing to resume: start a new run")
    return (f"{run_dir} holds no checkpoint.json: its run stopped before its first epoch finished; nothing to "
            "resume: start a new run")


def stop_line(stopped):
    """The line for a run `stopped` (a KeyboardInterrupt, or SetUpInterrupted from its data set-up):
    what its run folder kept where that holds a checkpoint, else how far the set-up got."""
    if isinstance(stopped, GroupInterrupted) or (
            isinstance(stopped, SetUpInterrupted) and not (Held.run_dir and read_progress(Held.run_dir))):
        return str(stopped)
    return what_it_kept(Held.run_dir)


def stop(signum, frame):
    """The first Ctrl-C or SIGTERM stops the process where it is, as a KeyboardInterrupt; the ones
    after are ignored, so that none cuts short what it saves or cleans up."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def stopping_on_signals():
    """Inside, Ctrl-C and SIGTERM are `stop`'s, also where they were ignored (a job started in the
    background, whose shell ignores its Ctrl-C, is still stopped cleanly by `kill -INT`); the
    handlers before come back after. Only the main thread can set handlers."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS if in_main_thread}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def stop_signals_blocked():
    """Ctrl-C and SIGTERM held back from this thread inside the block, and taken at its end: a
    process forked inside starts with them held back too, until it has set its own handlers."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class OutlivesItsReader:
    """A standard stream that a closed reader cannot stop: where a write fails (a closed pipe, as
    `| head` leaves; a terminal gone), the stream's file descriptor is pointed at /dev/null and the
    run goes on unseen. Everything else is the stream's own (isatty, encoding, fileno)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except OSError:
            self.lose_reader()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except OSError:
            self.lose_reader()

    def lose_reader(self):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream with no descriptor (a test's capture)
            pass

    def lose_terminal(self):
        """The terminal gone (SIGHUP): a stream written to it loses its reader; one written to a file
        (`> train.log`) or a pipe keeps writing there, since its reader is still there (a pipe's gone
        reader is a failed write)."""
        try:
            mode = os.fstat(self.stream.fileno()).st_mode
        except (OSError, ValueError, AttributeError):
            mode = 0
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            self.lose_reader()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextmanager
def outliving_the_terminal():
    """Inside, a run's output is its log, not its data: a closed terminal (SIGHUP, as closing it or
    losing an ssh session sends) or a closed pipe (`... | head`) leaves the run training unseen to
    the end, its folder whole, instead of ending it with nothing saved."""
    streams = OutlivesItsReader(sys.stdout), OutlivesItsReader(sys.stderr)
    sys.stdout, sys.stderr = streams

    def terminal_gone(signum, frame):
        for stream in streams:
            stream.lose_terminal()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGHUP, terminal_gone) if in_main_thread else None
    try:
        yield
    finally:
        sys.stdout, sys.stderr = (stream.stream for stream in streams)
        if in_main_thread:
            signal.signal(signal.SIGHUP, previous)


@contextmanager
def hangups_ignored():
    """SIGHUP ignored inside: a process started inside starts ignoring it too (an ignored signal stays
    ignored across exec), until it sets a handler of its own (outliving_the_terminal)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextmanager
def stops_cleanly(resumed=None):
    """Inside: Ctrl-C or SIGTERM ends the process with one line saying what its run folder kept and
    how to go on, exit status 130; a failure of the machine (an OSError) in a run that can be
    resumed says how, in its error line. A `resumed` run folder is held from the start, a new one
    once made (hold); it is let go of at the end, however the run ends."""
    with stopping_on_signals():
        try:
            if resumed:
                hold(Path(resumed))
            yield
        except (KeyboardInterrupt, SetUpInterrupted, GroupInterrupted) as e:
            if main_process():  # one line from a run of several processes: the main one's
                print(stop_line(e), file=sys.stderr)
            sys.exit(INTERRUPTED)
        except OSError as e:
            if Held.run_dir is not None and read_progress(Held.run_dir):
                e.add_note(f"then resume the run, which is saved: {resume_command(Held.run_dir)}")
            raise
        finally:
            let_go()
