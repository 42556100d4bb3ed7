"""The run folder: every file a run writes, by name, and how the ones read back are written, read
and checked; the --out folder's index of runs. No other module spells a file name.

    <out>/<timestamp>[-name]/          a run: config.json, history.csv, summary.json, the figures,
                                       model.safetensors, classes.json, export.pkl, report.html;
                                       checkpoint.json (+ checkpoint.pth) while it can be resumed;
                                       the trackers': TensorBoard's event files, wandb/
    <out>/<timestamp>[-name]-group/    a group (--runs, --sweep): summary.json, compare.png
    <out>/index.csv                    a row per finished run
    <out>/mlflow.db, <out>/mlartifacts/  --track mlflow's local store: the runs, their files

Every file is written whole, by a rename (files.atomic). Nothing here loads torch: the tools that
only read run folders answer without it.
"""
import json
import math
import pickle
import types
from datetime import datetime
from pathlib import Path

from filelock import FileLock

from cifar10_fast.core.errors import BadInput, counted
from cifar10_fast.core.files import atomic, csv_text, write_json

CONFIG = "config.json"
CHECKPOINT = "checkpoint.json"
CHECKPOINT_WEIGHTS = "checkpoint.pth"
HISTORY = "history.csv"
SUMMARY = "summary.json"
LR_FIND_CSV, LR_FIND_PNG, LR_FIND_JSON = "lr_find.csv", "lr_find.png", "lr_find.json"
LR_SCHEDULE_CSV, LR_SCHEDULE_PNG = "lr_schedule.csv", "lr_schedule.png"
CURVES_PNG, CONFUSION_MATRIX_PNG, MISCLASSIFIED_PNG = "curves.png", "confusion_matrix.png", "misclassified.png"
WEIGHTS = "model.safetensors"
CLASSES = "classes.json"
EXPORT = "export.pkl"
REPORT = "report.html"
LOCK = ".lock"
# A group folder's, beside its summary.json: its study (the settings that make it, where it is kept;
# its journal where no database keeps it) and figures.
COMPARE_PNG = "compare.png"
STUDY, JOURNAL = "study.json", "study.journal"
SEARCH_HISTORY_PNG, SEARCH_IMPORTANCE_PNG = "search_history.png", "search_importance.png"
INDEX, INDEX_LOCK = "index.csv", ".index.csv.lock"  # an --out folder's
# The trackers' (core/trackers.py). TensorBoard's event files lie in the run folder itself, so that
# `tensorboard --logdir <out>` names each run as its folder; torch's SummaryWriter names them.
TENSORBOARD_EVENTS = "events.out.tfevents.*"
WANDB_FOLDER = "wandb"  # everything W&B writes for the run: its offline run, logs, cache, settings
MLFLOW_DB, MLFLOW_DB_LOCK, MLFLOW_ARTIFACTS = "mlflow.db", ".mlflow.db.lock", "mlartifacts"  # an --out folder's
# A run is finished when it has all of these: report.html comes after every file compare reads, so
# a run that crashed on the way (in its export, say) has a summary.json but no report.html.
FINISHED_RUN = (CONFIG, SUMMARY, HISTORY, LR_SCHEDULE_CSV, REPORT)
# The headline numbers of a run's summary.json, in its index row and in a comparison.
METRICS = ["final_accuracy", "tta_accuracy", "best_accuracy", "fit_seconds", "fit_images_per_s", "epochs_run",
           "first_epoch_90", "first_epoch_93", "first_epoch_94", "seconds_to_90", "seconds_to_93", "seconds_to_94",
           "stopped_early"]
RESUME_FIX = "give the folder of an interrupted run"
DAMAGED_CHECKPOINT = "the checkpoint is damaged; start a new run"
INDEX_FIX = "repair it, or move it away (the next finished run starts a new index)"
# Where the modules that a run's export.pkl names lived before they became the package: a learner
# exported then names `optimizer.FusedAdamW`, `recording.DeviceAvgMetric`, ...
MODULES_BEFORE_THE_PACKAGE = {
    "callbacks": "cifar10_fast.training.callbacks", "checkpoint": "cifar10_fast.training.fit",
    "data": "cifar10_fast.data.loaders", "decoded_folder": "cifar10_fast.data.decoded_folder",
    "device_loader": "cifar10_fast.data.device_loader", "hardware": "cifar10_fast.training.hardware",
    "lr_schedule": "cifar10_fast.training.lr_schedule", "optimizer": "cifar10_fast.training.optimizer",
    "outputs": "cifar10_fast.training.outputs", "recording": "cifar10_fast.training.recording",
}


class RunFileError(BadInput):
    """A file of a run folder that cannot be what a run wrote, worded as one line that says what to do."""


# ---------------------------------------------------------------------------------------------
# JSON files.

def read_object(path, fix=RESUME_FIX):
    """The JSON object in `path`; a file that is not one is refused, named, with `fix`."""
    try:
        content = json.loads(Path(path).read_text())
    except ValueError as e:  # not JSON, or not even UTF-8 text
        raise RunFileError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())}): {fix}") from e
    if not isinstance(content, dict):
        raise RunFileError(f"{path} is damaged (not a JSON object): {fix}")
    return content


def read_config(run_dir, fix=RESUME_FIX):
    return read_object(Path(run_dir) / CONFIG, fix)


def write_config(run_dir, config):
    write_json(Path(run_dir) / CONFIG, config)


def read_summary(run_dir, fix=RESUME_FIX):
    return read_object(Path(run_dir) / SUMMARY, fix)


def write_summary(folder, summary):
    """A run's summary.json, or a group's."""
    write_json(Path(folder) / SUMMARY, summary)


def write_lr_find(run_dir, found):
    write_json(Path(run_dir) / LR_FIND_JSON, found)


def is_group_folder(folder):
    return (Path(folder) / STUDY).is_file()


def read_study(group_dir):
    return read_object(Path(group_dir) / STUDY, "start the group again")


def write_study(group_dir, study):
    write_json(Path(group_dir) / STUDY, study)


def is_range_test(run_dir):
    """Whether `run_dir` is a --find-lr run's, by its config.json (which may be damaged: then not)."""
    try:
        return json.loads((Path(run_dir) / CONFIG).read_text()).get("find_lr") is True
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# The checkpoint: what a run that can be resumed keeps.

def has_checkpoint(run_dir):
    return (Path(run_dir) / CHECKPOINT).is_file()


def read_progress(run_dir):
    """checkpoint.json of `run_dir` as it is, or None where there is none. (It is written whole.)"""
    path = Path(run_dir) / CHECKPOINT
    return json.loads(path.read_text()) if path.is_file() else None


def write_progress(run_dir, progress):
    write_json(Path(run_dir) / CHECKPOINT, progress)


def remove_checkpoint(run_dir):
    """The checkpoint gone, its weights first: a run stopped in between still resumes from it."""
    for name in (CHECKPOINT_WEIGHTS, CHECKPOINT):
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_checkpoint(run_dir, epochs):
    """checkpoint.json of a run of `epochs` epochs, refused unless it names a finished epoch of the
    run and holds what the resumed run joins up with (each earlier epoch's line, the LRs and betas
    it was trained with, its seconds): anything else would resume into a NaN summary or fail in the
    middle of the fit."""
    path = Path(run_dir) / CHECKPOINT
    saved = read_object(path)
    done = saved.get("epochs_done")
    if type(done) is not int or not 1 <= done <= (epochs or 0):  # JSON's true would pass as an int
        raise RunFileError(f"{path} says {done!r} epochs are done, not a whole number from 1 to the run's {epochs}: "
                           f"{DAMAGED_CHECKPOINT}")
    history, seconds = saved.get("history"), saved.get("fit_seconds")
    if not (isinstance(history, list) and len(history) == done and all(isinstance(row, list) for row in history)
            and all(numbers(saved.get(key)) for key in ("lrs", "moms"))
            and type(seconds) in (int, float) and seconds >= 0):
        raise RunFileError(f"{path} lacks the lines, LRs or seconds of its {counted(done, 'epoch')}: "
                           f"{DAMAGED_CHECKPOINT}")
    if not (type(saved.get("fit_done", False)) is bool and time_to_accuracy(saved.get("time_to_accuracy"))):
        raise RunFileError(f"{path} holds a fit_done or time_to_accuracy that a run cannot write: {DAMAGED_CHECKPOINT}")
    return saved


def time_to_accuracy(state):
    """Whether `state` is absent or as callbacks.TimeToAccuracy.state() writes it: the milestones
    reached (as text) with their [epoch, seconds], and whether the fit stopped early."""
    if state is None:
        return True
    reached = state.get("reached") if isinstance(state, dict) else None
    return (isinstance(reached, dict) and type(state.get("stopped_early")) is bool
            and all(number_text(milestone) and numbers(when) and len(when) == 2 for milestone, when in reached.items()))


def number_text(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def numbers(values):
    return isinstance(values, list) and len(values) > 0 and all(type(v) in (int, float) for v in values)


# ---------------------------------------------------------------------------------------------
# Tables: the history, the schedule, the index.

def epochs_logged(run_dir):
    history = Path(run_dir) / HISTORY
    return max(len(history.read_text().splitlines()) - 1, 0) if history.is_file() else 0


def read_table(path, columns, fix, **read_csv_options):
    """The CSV table in `path`, which must have `columns`; a damaged file is refused, named."""
    import pandas as pd  # a second to load: only the tools that read tables need it
    try:
        table = pd.read_csv(path, **read_csv_options)
    except ValueError as e:  # pandas' ParserError and EmptyDataError, or a file that is not UTF-8 text
        raise RunFileError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())}): {fix}") from e
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise RunFileError(f"{path} is damaged (no column {missing[0]}): {fix}")
    return table


def read_history(run_dir, fix=RESUME_FIX):
    return read_table(Path(run_dir) / HISTORY, ["epoch", "accuracy"], fix)


def read_schedule(run_dir, fix=RESUME_FIX):
    return read_table(Path(run_dir) / LR_SCHEDULE_CSV, ["epoch", "lr"], fix)


def missing_run_file(run_dir):
    """The first file of a finished run that `run_dir` lacks, or None."""
    return next((name for name in FINISHED_RUN if not (Path(run_dir) / name).is_file()), None)


def headline(summary):
    """The headline numbers of a run's summary.json (None for those it lacks)."""
    return {name: summary.get("epochs") if name == "epochs_run" else summary.get(name) for name in METRICS}


def read_index(index):
    """index.csv as text, so that every value can be written back as it was."""
    return read_table(index, ["run"], INDEX_FIX, dtype=str, keep_default_na=False)


def check_index(out):
    """Refuse, before a run trains, an <out>/index.csv it could not add its row to at the end."""
    index = Path(out) / INDEX
    if index.exists():
        read_index(index)


def append_to_index(out, run_dir, config, summary):
    """Add the run's row to <out>/index.csv. Under a lock, the whole table is read, extended and
    written through a temporary file, so concurrent runs and crashes lose no row, and a new setting
    becomes a new column (empty in older rows). A run has one row: one resumed after its row was
    written (stopped before it deleted its checkpoint) replaces it."""
    import pandas as pd
    index = Path(out) / INDEX
    # Lists (the class names) as JSON, their text as it is: the CSV is UTF-8, and "\\u732b" is no name.
    settings = {key: csv_text(json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value)
                for key, value in config.items()}
    row = pd.DataFrame([{"run": run_dir.name, "finished": datetime.now().isoformat(timespec="seconds"),
                         "git_commit": summary.get("git_commit"), **settings, **headline(summary)}])
    with FileLock(index.with_name(INDEX_LOCK)):
        if index.exists():  # read as text, so that every earlier value is written back unchanged
            earlier = read_index(index)
            row = pd.concat([earlier[earlier.run != run_dir.name], row], ignore_index=True)
        with atomic(index) as tmp:
            row.to_csv(tmp, index=False)


# ---------------------------------------------------------------------------------------------
# The exported learner.

class ExportUnpickler(pickle.Unpickler):
    """pickle's Unpickler that finds what an export from before the package names where it is now."""

    def find_class(self, module, name):
        return super().find_class(MODULES_BEFORE_THE_PACKAGE.get(module, module), name)


# What fastai's load_learner(pickle_module=...) hands to torch.load: pickle, with that Unpickler.
EXPORT_PICKLE = types.SimpleNamespace(**{**vars(pickle), "Unpickler": ExportUnpickler})
