"""Runs side by side: the runs index, and a table and a figure of the runs you choose.

    python compare.py [RUN_OR_GROUP_DIR ...] [--out runs] [--png compare.png]

Without folders it compares every run listed in <out>/index.csv. A group folder (written by
`train_fastai.py --runs N` or `--sweep`) stands for its member runs. It prints one row per run
(the settings that differ between them, final and TTA accuracy, fit time, epochs to 90/93/94%)
and, where several runs share a configuration, their mean, std, min and max; compare.png shows
test accuracy per epoch and the LR schedule of every run on shared axes.
"""
import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt
import pandas as pd
from filelock import FileLock

from files import atomic, save_figure

# What a comparison shows of each run's config.json and summary.json.
SETTINGS = ["preset", "epochs", "peak_epoch", "bs", "lr_min", "lr_max", "lr_source", "wd", "label_smoothing", "tta",
            "target_acc", "aug", "precision", "width", "subset", "device", "seed"]
METRICS = ["final_accuracy", "tta_accuracy", "best_accuracy", "fit_seconds", "train_images_per_s", "epochs_run",
           "first_epoch_90", "first_epoch_93", "first_epoch_94", "seconds_to_90", "seconds_to_93", "seconds_to_94",
           "stopped_early"]
RUN_FILES = ["config.json", "summary.json", "history.csv", "lr_schedule.csv"]


class CompareError(Exception):
    """Bad input to a comparison, worded as one line that says what to do."""


def headline(summary):
    return {name: summary.get("epochs") if name == "epochs_run" else summary.get(name) for name in METRICS}


def append_to_index(out, run_dir, config, summary):
    """Add the run's row to <out>/index.csv. Under a lock, the whole table is read, extended and
    written through a temporary file, so concurrent runs and crashes lose no row, and a new setting
    becomes a new column (empty in older rows)."""
    index = Path(out) / "index.csv"
    settings = {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in config.items()}
    row = pd.DataFrame([{"run": run_dir.name, "finished": datetime.now().isoformat(timespec="seconds"),
                         "git_commit": summary.get("git_commit"), **settings, **headline(summary)}])
    with FileLock(index.with_name(".index.csv.lock")):
        if index.exists():  # read as text, so that every earlier value is written back unchanged
            row = pd.concat([pd.read_csv(index, dtype=str, keep_default_na=False), row], ignore_index=True)
        with atomic(index) as tmp:
            row.to_csv(tmp, index=False)


def run_dirs(given, out):
    """The run folders to compare: the given ones, with each group folder replaced by its members,
    or else every run in <out>/index.csv that still exists."""
    if not given:
        index = out / "index.csv"
        if not index.is_file():
            raise CompareError(f"no runs to compare: {index} does not exist; train a run first or give run folders")
        listed = [out / name for name in pd.read_csv(index, dtype=str).run]
        found = [path for path in listed if path.is_dir()]
        if not found:
            raise CompareError(f"no runs to compare: none of the runs in {index} is still in {out}")
        return found
    dirs = []
    for path in map(Path, given):
        if not path.is_dir():
            raise CompareError(f"{path} is not a folder: give run folders or group folders that train_fastai.py wrote")
        summary = path / "summary.json"
        members = json.loads(summary.read_text()).get("members") if summary.is_file() else None
        dirs += [path.parent / name for name in members] if members else [path]
    return dirs


def load_runs(dirs):
    """One row per run: its name, group, sweep point, settings and headline numbers, plus its
    per-epoch history and LR schedule for the figure."""
    rows = []
    for path in map(Path, dirs):
        missing = [name for name in RUN_FILES if not (path / name).is_file()]
        if missing:
            raise CompareError(f"{path} is not a finished training run (no {missing[0]}): give run folders or group "
                               "folders that train_fastai.py wrote")
        config = json.loads((path / "config.json").read_text())
        summary = json.loads((path / "summary.json").read_text())
        rows.append({"run": path.name, "group": config.get("group") or path.name,
                     "point": config.get("sweep_point") or "",
                     **{name: config.get(name) for name in SETTINGS}, **headline(summary),
                     "history": pd.read_csv(path / "history.csv"), "schedule": pd.read_csv(path / "lr_schedule.csv")})
    return pd.DataFrame(rows)


def varying(runs, columns):
    return [c for c in columns if runs[c].astype(str).nunique() > 1]


def runs_table(runs):
    """One row per run: the settings that differ between the runs, then the headline numbers."""
    table = runs.set_index("run")[[*varying(runs, ["group", "point", *SETTINGS]), "final_accuracy", "tta_accuracy",
                                   "fit_seconds", "epochs_run", "first_epoch_90", "first_epoch_93", "first_epoch_94"]]
    table[["final_accuracy", "tta_accuracy"]] = 100 * table[["final_accuracy", "tta_accuracy"]].astype(float)
    return table.rename(columns={"final_accuracy": "final %", "tta_accuracy": "tta %", "fit_seconds": "fit s"}) \
        .dropna(axis=1, how="all")


def points_table(runs):
    """Per configuration (a group's sweep point, or a single run): mean, std, min and max of the
    final test accuracy (%) and of the fit time (s) over its seeds."""
    runs = runs.assign(accuracy=100 * runs.final_accuracy, tta=100 * runs.tta_accuracy.astype(float))
    stats = ["mean", "std", "min", "max"]
    table = runs.groupby(["group", "point"], sort=False).agg(
        runs=("run", "size"), **{f"final % {s}": ("accuracy", s) for s in stats},
        **{f"fit s {s}": ("fit_seconds", s) for s in stats}, **{"tta % mean": ("tta", "mean")})
    return table.dropna(axis=1, how="all").reset_index()


def records(table):
    """The table's rows as JSON-ready dicts (NaN, e.g. the std of one run, becomes null)."""
    return table.astype(object).where(table.notna(), None).to_dict("records")


def format_table(table, index=True):
    """Accuracies (%) and seconds to two decimals; settings (an LR of 0.002) as they were given."""
    table = table.copy()
    for column in [c for c in table.columns if "%" in c or "fit s" in c]:
        table[column] = table[column].map(lambda x: f"{x:.2f}" if pd.notna(x) else "")
    return table.to_string(index=index, float_format=lambda x: f"{x:.6g}",
                           col_space={column: len(column) + 2 for column in table.columns})


def format_points(table):
    labels = varying(table, ["group", "point"]) or ["group"]
    table = table.drop(columns=[c for c in ("group", "point") if c not in labels])
    return "mean, std, min, max over seeds:\n" + format_table(table, index=False)


def write_figure(runs, path):
    """Test accuracy per epoch and the LR schedule of every run, on shared axes; one colour per
    configuration, so seeds of the same point share it."""
    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    colours = {}
    for run in runs.itertuples():
        key = (run.group, run.point)
        first = key not in colours
        colour = colours.setdefault(key, f"C{len(colours) % 10}")
        label = (run.point or run.group) if first else None
        ax_acc.plot(run.history.epoch + 1, 100 * run.history.accuracy, marker="o", c=colour, alpha=0.8, label=label)
        ax_lr.plot(run.schedule.epoch, run.schedule.lr, c=colour, alpha=0.8, label=label)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="one-cycle LR schedule")
    ax_acc.legend(fontsize=8)
    save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run or group folders (default: every run in the index)")
    p.add_argument("--out", default="runs", help="the folder holding index.csv (default runs)")
    p.add_argument("--png", type=Path, default=Path("compare.png"),
                   help="the figure to write; never overwritten (default compare.png)")
    args = p.parse_args(argv)
    try:
        runs = load_runs(run_dirs(args.runs, Path(args.out)))
        if Path(args.png).exists():
            raise CompareError(f"{args.png} exists: give --png a new file name")
        print(format_table(runs_table(runs)))
        if runs.duplicated(["group", "point"]).any():
            print(format_points(points_table(runs)))
        write_figure(runs, args.png)
        print(f"figure: {args.png}")
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
