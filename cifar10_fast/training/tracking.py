"""The run seen where ML engineers look, while it trains: TensorBoard by default, MLflow and W&B on
`--track` (core/trackers.py: what each needs, where each writes).

The run folder stays the source of truth, and the trackers are views of it. At each trained
epoch's end they get what the Recorder logged (the losses and accuracy it has just read off the
device, once: no read of the GPU of their own), the LR and momentum the schedule set last, and the
epoch's training images per second; at the fit's start the settings; once the run is whole, its
headline numbers beside its settings, its figures and, in MLflow, its files. The step of an epoch
is its index, as in history.csv, so a resumed run continues the same curves: the epochs it skips
were tracked by the run before.

Each tracker's library is imported only when asked for. A tracker that fails, as it opens or
mid-run, is dropped with one warning line: the run goes on, and its folder keeps everything.
"""
import json
import time
from pathlib import Path

from fastai.callback.core import Callback
from fastai.learner import Recorder

from cifar10_fast.core.errors import warn
from cifar10_fast.core.run_folder import CONFUSION_MATRIX_PNG, LR_FIND_PNG, LR_SCHEDULE_PNG, headline
from cifar10_fast.training.trackers import BACKENDS

# What a tracker shows of each epoch: the tags, and the Recorder's names of the logged values.
LOGGED = {"loss/train": "train_loss", "loss/test": "valid_loss", "accuracy/test": "accuracy"}
# The run's figures shown as images: the range test's curve (LRMIN and LRMAX marked), the confusion
# matrix, the schedule.
FIGURES = {"range_test": LR_FIND_PNG, "confusion_matrix": CONFUSION_MATRIX_PNG, "schedule": LR_SCHEDULE_PNG}


class Tracking:
    """The trackers of one run (`trackers`, as --track names them), open inside the block and
    closed at its end however the run ends: finished, failed, or stopped by Ctrl-C or SIGTERM.
    `recorded` is config.json's content, the LRs resolved: the run's settings. A `resumed` run
    continues its own runs in them."""

    def __init__(self, trackers, run_dir, recorded, resumed):
        self.trackers, self.run_dir, self.recorded = trackers, Path(run_dir), recorded
        self.first_epoch = resumed.get("epochs_done", 0)
        self.open = []

    def __enter__(self):
        for name in self.trackers:
            try:
                self.open.append(BACKENDS[name](self.run_dir, self.recorded, resumed=self.first_epoch > 0))
            except Exception as e:  # a server gone since the check, say: the run is worth more than its view
                warn(f"{BACKENDS[name].name} cannot track {self.run_dir.name} ({failure(e)}): the run goes on "
                     "without it; its folder keeps everything")
        return self

    def __exit__(self, kind, error, traceback):
        self.each("close", ended(kind))
        self.open = []

    def each(self, method, *args):
        """`method(*args)` of every open tracker; one that fails is dropped, with a warning."""
        for backend in list(self.open):
            try:
                getattr(backend, method)(*args)
            except Exception as e:
                self.open.remove(backend)
                warn(f"{backend.name} stopped tracking {self.run_dir.name} ({failure(e)}): the run goes on without "
                     "it; its folder keeps everything")
                if method != "close":
                    try:
                        backend.close("failed")
                    except Exception:
                        pass  # the warning has said it failed

    def callback(self):
        """The fit's callback that tracks its epochs."""
        return TrackEpochs(self)

    def finish(self, summary):
        """The whole run: its headline numbers (summary.json's, as `summary/<name>`) beside its
        settings, its figures, and its files where the tracker keeps them."""
        numbers = {f"summary/{name}": float(value) for name, value in headline(summary).items()
                   if isinstance(value, (int, float))}
        figures = {tag: self.run_dir / name for tag, name in FIGURES.items() if (self.run_dir / name).is_file()}
        self.each("finish", summary["epochs"] - 1, numbers, figures)


class TrackEpochs(Callback):
    """Each trained epoch's numbers to the trackers, read from what the Recorder logged at its end.
    After the Recorder and before TimeToAccuracy (both Recorder.order + 1), which may stop the fit
    at the end of the epoch that reaches --target-acc: that epoch is tracked too."""
    order = Recorder.order + 0.5

    def __init__(self, tracking):
        self.tracking = tracking

    def before_fit(self):
        self.tracking.each("settings", settings(self.tracking.recorded))

    def before_epoch(self):
        self.started = time.perf_counter()

    def after_epoch(self):
        if self.epoch < self.tracking.first_epoch:
            return  # an epoch fit_one_cycle skipped on resume: the run before tracked it
        logged = dict(zip(self.recorder.metric_names, self.recorder.log))
        hps = self.learn.param_scheduler.hps  # what the schedule set at each batch of this fit
        images = len(self.dls.train) * self.dls.train.bs  # whole batches only, as summary.json counts them
        metrics = {**{tag: float(logged[name]) for tag, name in LOGGED.items()},
                   "schedule/lr": float(hps["lr"][-1]), "schedule/momentum": float(hps["mom"][-1]),
                   "speed/images_per_s": images / (time.perf_counter() - self.started)}
        self.tracking.each("epoch", self.epoch, metrics)


def settings(recorded):
    """The run's settings as the trackers take them: numbers, text and truth values, a list as its
    JSON; those not set (None) left out, as the trackers have no value for nothing."""
    return {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in recorded.items()
            if value is not None}


def ended(kind):
    """How the run ended, by the kind of exception that ended it (None: none)."""
    if kind is None:
        return "finished"
    return "stopped" if issubclass(kind, KeyboardInterrupt) else "failed"  # Ctrl-C and SIGTERM are KeyboardInterrupt


def failure(error):
    """An exception as a few words of one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
