"""A group of runs as one Optuna study: each trial a run, trained into a run folder of its own as any
other run is; the study kept in a journal file in the group folder, or in a database (--storage)
that workers on several machines share.

A grid (--runs seeds of every --sweep point) is every point and seed enqueued once; a worker takes
the next one waiting, so that each is trained once whatever the workers. A search (--search) is
Optuna's TPE sampling the ranges, each worker with a seed of its own, every trial tested on the
training images held out (--holdout), never the test set. A trial interrupted (Ctrl-C, SIGTERM) or
whose worker was killed is queued again at the next start, and goes on from its run folder's
checkpoint where this machine has it.
"""
import json
import os
import socket
import time
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import sqlalchemy
from fastai.callback.core import CancelFitException
from fastai.callback.tracker import TrackerCallback
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from optuna_integration.fastaiv2 import FastAIV2PruningCallback

from cifar10_fast.core import run_folder
from cifar10_fast.core.config import member, redacted
from cifar10_fast.core.errors import BadInput, warn
from cifar10_fast.core.groups import (
    DEFAULT_TRIALS,
    HOLDOUT_FRACTION,
    search_space,
    sweep_grid,
    without_password,
)
from cifar10_fast.data.cache import process_exists

HEARTBEAT_S, GRACE_S = 20, 60  # a trial on a database beats every 20 s; one silent for a minute, its worker is lost
TABLE_RACE_ATTEMPTS = 10
FAILURE = "failure"  # a trial's record of the line its bad input failed it with
optuna.logging.set_verbosity(optuna.logging.ERROR)  # what each trial did is said by our own lines
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's: it is ours


def mend_journal(group_dir):
    """The group's study.journal made one that Optuna can read and append to, before any worker
    starts (none writes then): a last record cut short (a process killed, or a disk that filled, as
    it wrote it) removed, with a warning, since Optuna would append the next record to it and lose
    both; a journal damaged elsewhere refused."""
    journal = Path(group_dir) / run_folder.JOURNAL
    if not journal.is_file():
        return
    written = journal.read_bytes()
    whole = written[:written.rfind(b"\n") + 1]
    for number, line in enumerate(whole.splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError:
            raise BadInput(f"{journal} is damaged (its line {number} is no record of Optuna's): the group's study "
                           "cannot be read; start the group again (its finished runs stay in their folders)") from None
    if len(whole) < len(written):
        with journal.open("r+b") as file:
            file.truncate(len(whole))
        warn(f"{journal} ended in a record cut short (a process killed, or a full disk, as it was written): removed; "
             "the group goes on without it")


class StorageUnreachable(BadInput):
    """A --storage database this worker cannot reach."""


def open_storage(config, group_dir):
    """The study's storage: the database of --storage, its stale trials (a worker lost) failed and
    queued again by Optuna's heartbeat; else a journal file in the group folder. Workers that start
    at once on a new database race to make its tables: the one that loses tries again."""
    if not config.storage:
        return JournalStorage(JournalFileBackend(str(Path(group_dir) / run_folder.JOURNAL)))
    for attempt in range(TABLE_RACE_ATTEMPTS):
        try:
            return RDBStorage(config.storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except sqlalchemy.exc.IntegrityError:  # another worker made the same table first
            time.sleep(0.2 * (attempt + 1))
        except Exception as e:  # SQLAlchemy's and the driver's errors, whatever the database says
            reason = without_password(" ".join(str(e).split())[:300], config.storage)
            raise StorageUnreachable(f"cannot reach the study's database {redacted(config.storage)} "
                                     f"({type(e).__name__}: {reason}): check the URL, that the server runs and takes "
                                     "this machine's connections") from None
    raise StorageUnreachable(f"the tables of the study's database {redacted(config.storage)} could not be made: "
                             "another process kept making them; start again")


class Group:
    """The study of a group of runs in `group_dir`: its trials, the run each is, and how a worker
    trains them with `train(config, data=...)`, train_fastai.run."""

    def __init__(self, config, group_dir, storage=None):
        self.config, self.dir = config, Path(group_dir)
        self.folder_names = folder_names(self.dir)
        self.name = run_folder.read_study(self.dir)["study"]  # named when the group folder was made
        self.space = search_space(config.search)
        seeds = range(config.seed, config.seed + config.runs)
        self.grid = [] if self.space else [(point, seed) for point in sweep_grid(config.sweep) for seed in seeds]
        self.storage = storage or open_storage(config, group_dir)

    @property
    def searching(self):
        return bool(self.space)

    @property
    def total(self):
        return self.config.trials or DEFAULT_TRIALS if self.searching else len(self.grid)

    def study(self, worker=0):
        """The study, made where it is new (two workers starting at once both find it); a search's
        sampler seeded for this worker, so that two workers do not suggest the same points."""
        sampler = TPESampler(seed=self.config.seed + worker) if self.searching else None
        # A trial's held-out accuracy below the median of the others' at the same epoch, from its second
        # epoch on and once two trials have finished, stops it.
        pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=1) if self.config.prune else None
        return optuna.create_study(study_name=self.name, storage=self.storage, sampler=sampler, pruner=pruner,
                                   load_if_exists=True, direction="maximize")

    def prepare(self, study):
        """Every point of the grid not in the study yet, enqueued; and each trial whose worker was
        stopped or killed queued again."""
        trials = study.get_trials(deepcopy=False)
        present = {trial.user_attrs.get("point") for trial in trials}
        for point, seed in self.grid:
            key = point_key(point, seed)
            if key not in present:
                study.enqueue_trial({**point, "seed": seed}, user_attrs={"point": key})
        retried = superseded(trials)
        for trial in trials:
            killed = trial.state == TrialState.RUNNING and worker_gone(trial)
            if killed:
                study.tell(trial.number, state=TrialState.FAIL)
            # Failed, though not on its own: a stop, wherever it came (inside Optuna's code, before or after
            # the trial's own, or in it), and whatever the trial had recorded.
            interrupted = trial.state == TrialState.FAIL and not failed_on_its_own(trial)
            if (killed or interrupted) and trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number,
                                                              "outcome": None})

    def trial_settings(self, trial):
        """The point and seed of `trial`, or None where it is no trial of this group: a grid trial
        that was not enqueued (a worker asked as another took the last), or a point that an earlier
        trial already trains or trained (two starts enqueuing at once)."""
        if not self.searching:
            if "point" not in trial.user_attrs:
                return None
            axes = {key: sorted({point[key] for point, _ in self.grid}) for key in self.grid[0][0]}
            point = {key: trial.suggest_categorical(key, values) for key, values in axes.items()}
            seed = trial.suggest_categorical("seed", sorted({seed for _, seed in self.grid}))
            if any(other.number < trial.number and other.user_attrs.get("point") == trial.user_attrs["point"]
                   and other.state in (TrialState.RUNNING, TrialState.COMPLETE)
                   for other in trial.study.get_trials(deepcopy=False)):
                return None
            return point, seed
        point = {key: trial.suggest_float(key, span.low, span.high, log=span.log) if span.kind is float
                 else trial.suggest_int(key, int(span.low), int(span.high), log=span.log)
                 for key, span in self.space.items()}
        return point, self.config.seed

    def member(self, point, seed, data):
        """The settings of the run of `point` and `seed`: a search's trial is tested on its held-out
        training images; where this machine holds its run folder, interrupted, it goes on from there."""
        config = replace(member(self.config, point, seed, self.dir.name), resume=None)  # not the group's --resume
        if self.searching:
            training = int((~data.is_test).sum())
            config = replace(config, holdout=self.config.holdout or max(int(training * HOLDOUT_FRACTION), 1))
        unfinished = [path for path in self.runs_here(config) if run_folder.has_checkpoint(path)]
        return replace(config, resume=str(unfinished[-1])) if unfinished else config

    def runs_here(self, config):
        """The run folders this machine holds of the member `config`, oldest first."""
        return sorted(path for path in Path(config.out).glob(f"*-{config.name}") if member_of(path, self.folder_names))

    def finished_untold(self, config):
        """The run folder of the member `config` that trained to its end though the study never heard
        (its worker stopped between the run's last file and the study's record), or None."""
        return next((path for path in self.runs_here(config) if not run_folder.has_checkpoint(path)
                     and run_folder.missing_run_file(path) is None), None)

    def objective(self, train, data, worker):
        def run_trial(trial):
            # Who trains it, first: a trial whose worker is gone is known by them (see prepare).
            for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "worker": worker}.items():
                trial.set_user_attr(key, value)
            try:
                return self.train_trial(trial, train, data)
            except KeyboardInterrupt:  # wherever the stop came, the trial is queued again by the next start
                trial.set_user_attr("outcome", "interrupted")
                raise
        return run_trial

    def train_trial(self, trial, train, data):
        """The held-out or test accuracy of `trial`'s run, trained by `train`; its run folder's where it
        trained to its end already."""
        settings = self.trial_settings(trial)
        if settings is None:
            trial.set_user_attr("outcome", "not a point of the group")
            raise optuna.TrialPruned()
        config = self.member(*settings, data)
        trial.set_user_attr("run", Path(config.resume).name if config.resume else None)
        trial.set_user_attr("holdout", config.holdout)
        pruning = [PruneAtMedian(trial)] if self.config.prune else []
        run_dir = self.finished_untold(config)
        try:
            if run_dir:  # trained to its end already: the study is told now, the point never trained twice
                summary = run_folder.read_summary(run_dir)
            else:
                run_dir, summary = train(config, data=data, callbacks=pruning)
        except BadInput as e:
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr(FAILURE, str(e))
            warn(f"trial {trial.number} ({config.name}) failed: {e}")
            raise
        pruned = any(callback.pruned for callback in pruning)
        for key, value in {"run": run_dir.name, "fit_seconds": summary["fit_seconds"],
                           "outcome": "pruned" if pruned else "done",
                           "tta_accuracy": summary.get("tta_accuracy")}.items():
            trial.set_user_attr(key, value)
        if pruned:
            raise optuna.TrialPruned(f"its held-out accuracy at epoch {summary['epochs']} was below the median")
        return summary["final_accuracy"]

    def work(self, train, data, worker=0, callbacks=()):
        """Train trials of the group until none is left: a grid's waiting points, or a search's
        --trials. Bad input in a trial (a diverging LR) fails it alone; the others go on."""
        study = self.study(worker)
        if self.not_started(study):  # else its first trial would be none of the group's (see trial_settings)
            study.optimize(self.objective(train, data, worker), callbacks=[Finished(self), *callbacks],
                           catch=(BadInput,), gc_after_trial=True)

    def not_started(self, study):
        """How many of the group's trials no worker has taken yet: a grid's waiting points, a search's
        trials beyond those started (a trial queued again counts once)."""
        trials = study.get_trials(deepcopy=False)
        waiting = sum(trial.state == TrialState.WAITING for trial in trials)
        if not self.searching:
            return waiting
        started = [t for t in trials if t.state != TrialState.WAITING and t.number not in superseded(trials)]
        return waiting + max(self.total - len(started) - waiting, 0)


class PruneAtMedian(FastAIV2PruningCallback):
    """Optuna's fastai callback on the held-out accuracy, as the Recorder logs it once an epoch: where
    the pruner says so, the fit stops at the epoch's end and the run writes its outputs as any run
    stopped early does; the trial is then pruned."""

    def __init__(self, trial):
        super().__init__(trial, monitor="accuracy")
        self.pruned = False

    def after_epoch(self):
        try:
            super().after_epoch()
        except CancelFitException:
            self.pruned = True
            raise

    def after_fit(self):
        TrackerCallback.after_fit(self)  # the trial is pruned once the run is whole, not in the middle of its fit


class Finished:
    """Optuna's callback after each trial: the study stops once the group has nothing left to start."""

    def __init__(self, group):
        self.group = group

    def __call__(self, study, trial):
        if not self.group.not_started(study):
            study.stop()


def failed_on_its_own(trial):
    """Whether `trial` failed by its own bad input (a diverging LR, a batch larger than the data),
    its line recorded, rather than by a stop."""
    return trial.state == TrialState.FAIL and FAILURE in trial.user_attrs


def superseded(trials):
    """The numbers of the trials queued again, each replaced by its retry (ours, or Optuna's of a
    trial whose heartbeat stopped)."""
    return {trial.user_attrs.get("retry_of", trial.system_attrs.get("failed_trial")) for trial in trials} - {None}


def point_key(point, seed):
    return json.dumps({**point, "seed": seed}, sort_keys=True)


def worker_gone(trial):
    """Whether a RUNNING trial's worker is gone: killed outright on this machine (its process is no
    more). A database's heartbeat tells of another machine's."""
    pid = trial.user_attrs.get("pid")
    return trial.user_attrs.get("host") == socket.gethostname() and pid is not None and not process_exists(pid)


def folder_names(group_dir):
    """The names that a group folder's members know it by: its own, and the one it was made with (a
    folder renamed since is still theirs)."""
    made_as = run_folder.read_study(group_dir).get("folder") if run_folder.is_group_folder(group_dir) else None
    return {group_dir.name, made_as} - {None}


def member_of(run_dir, names):
    """Whether `run_dir` is a run of the group folder known by `names`: not where it is damaged, nor
    where its process stopped before it wrote its config.json."""
    try:
        return run_folder.read_config(run_dir).get("group") in names
    except (BadInput, FileNotFoundError):
        return False
