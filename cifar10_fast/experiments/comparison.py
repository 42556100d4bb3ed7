"""Runs side by side: their settings and headline numbers read from their run folders, a table of
the runs, one of each configuration's mean, std, min and max over its seeds, and a figure of their
test accuracy per epoch and LR schedule. compare.py shows them for the runs a user chooses; a group
(experiments/runner.py) for its members."""
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cifar10_fast.core.errors import BadInput, from_here, printable
from cifar10_fast.core.files import figure_text, save_figure
from cifar10_fast.core.run_folder import (
    SUMMARY,
    headline,
    missing_run_file,
    read_config,
    read_history,
    read_schedule,
    read_summary,
)

# What a comparison shows of each run's config.json and summary.json. data_sha256 and classes
# show runs on other data (whose accuracies do not compare).
SETTINGS = ["preset", "epochs", "peak_epoch", "bs", "lr_min", "lr_max", "lr_source", "wd", "label_smoothing", "tta",
            "target_acc", "aug", "precision", "width", "subset", "device", "seed", "data_sha256", "classes"]
# Settings too long to show whole: the data's hash by its first 12 digits (as git shortens a
# commit), the class names as a JSON list (a name may hold a comma).
SHORT_FORMS = {"data_sha256": lambda digest: digest[:12],
               "classes": lambda names: json.dumps(names, ensure_ascii=False)}
SUMMARY_NUMBERS = ["final_accuracy", "fit_seconds"]  # what the tables need of every run
RUN_FILE_FIX = "leave its run out, or delete the run"
# The tables' columns, as a group's summary.json records them.
RECORDED_AS = {"final %": "final_accuracy_percent", "tta %": "tta_accuracy_percent", "fit s": "fit_seconds"}
MAX_LINES = 10  # runs drawn one line each; beyond, each configuration's mean and range
LEGEND_ROWS = 24  # legend entries in a column of the figure's height at font size 8


class CompareError(BadInput):
    """Bad input to a comparison, worded as one line that says what to do."""


def load_runs(dirs):
    """One row per run: its name, group, sweep point, settings and headline numbers, plus its
    per-epoch history and LR schedule for the figure. A run that is not finished is refused."""
    rows = []
    for path in map(Path, dirs):
        missing = missing_run_file(path)
        if missing:
            raise CompareError(f"{path} is not a finished training run (no {missing}): give run folders or group "
                               "folders of runs that train_fastai.py finished")
        config, summary = read_config(path, RUN_FILE_FIX), read_summary(path, RUN_FILE_FIX)
        for name in SUMMARY_NUMBERS:
            if not isinstance(summary.get(name), (int, float)):
                raise CompareError(f"{path / SUMMARY} is damaged (no number {name}): {RUN_FILE_FIX}")
        group = path.parent / config["group"] if config.get("group") else path
        rows.append({"run": path.name, "group": folder_named(group),
                     "point": config.get("sweep_point") or "",
                     **{name: shown_setting(config, name) for name in SETTINGS}, **headline(summary),
                     "history": read_history(path, RUN_FILE_FIX), "schedule": read_schedule(path, RUN_FILE_FIX)})
    return pd.DataFrame(rows)


def folder_named(path):
    """A run's or a group's folder as the tables name it: from here where it lies below, else whole.
    Two runs of the same folder name in two --out folders are two configurations, not two seeds of one."""
    return from_here(path.resolve()) or str(path.resolve())


def shown_setting(config, name):
    """A setting of config.json as the table shows it; None where the run predates the setting."""
    value = config.get(name)
    return SHORT_FORMS[name](value) if name in SHORT_FORMS and value is not None else value


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
    """The table's rows as JSON-ready dicts, each column under a name a program reads ("final % mean"
    as final_accuracy_percent_mean); NaN, e.g. the std of one run, becomes null."""
    names = {f"{shown} {statistic}": f"{name}_{statistic}" for shown, name in RECORDED_AS.items()
             for statistic in ("mean", "std", "min", "max")}
    table = table.rename(columns=names)
    return table.astype(object).where(table.notna(), None).to_dict("records")


def format_table(table, index=True):
    """Accuracies (%) and seconds to two decimals; settings (an LR of 0.002) as they were given."""
    table = table.map(lambda value: printable(value) if isinstance(value, str) else value)
    for column in [c for c in table.columns if "%" in c or "fit s" in c]:
        table[column] = table[column].map(lambda x: f"{x:.2f}" if pd.notna(x) else "")
    return table.to_string(index=index, float_format=lambda x: f"{x:.6g}",
                           col_space={column: len(column) + 2 for column in table.columns})


def format_points(table):
    labels = varying(table, ["group", "point"]) or ["group"]
    table = table.drop(columns=[c for c in ("group", "point") if c not in labels])
    return "mean, std, min, max over seeds:\n" + format_table(table, index=False)


def write_figure(runs, path):
    save_figure(comparison_figure(runs), path)


def comparison_figure(runs):
    """Test accuracy per epoch and the LR schedule of every run, on shared axes; one colour per
    configuration, so seeds of the same point share it. Beyond MAX_LINES runs, a configuration's
    seeds are drawn as their mean accuracy and its range, so that many runs stay readable."""
    configurations = runs.groupby(["group", "point"], sort=False)
    # The legend beside the axes, one entry per configuration, in as many columns as fit the figure's
    # height; the figure widens by a column's width for each column after the first.
    columns = -(-configurations.ngroups // LEGEND_ROWS)
    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12 + 2 * (columns - 1), 4.5), sharex=True,
                                        layout="constrained")
    for ((group, point), members), colour in zip(configurations, configuration_colours(configurations.ngroups)):
        label = figure_text(point or group)
        if len(runs) > MAX_LINES and len(members) > 1:
            accuracy = 100 * pd.concat(list(members.history)).groupby("epoch").accuracy.agg(["mean", "min", "max"])
            ax_acc.plot(accuracy.index + 1, accuracy["mean"], marker="o", c=colour, label=f"{label} ({len(members)} "
                        "runs: mean, min-max)")
            ax_acc.fill_between(accuracy.index + 1, accuracy["min"], accuracy["max"], color=colour, alpha=0.2)
        else:
            for i, run in enumerate(members.itertuples()):
                ax_acc.plot(run.history.epoch + 1, 100 * run.history.accuracy, marker="o", c=colour, alpha=0.8,
                            label=None if i else label)
        for run in members.itertuples():
            ax_lr.plot(run.schedule.epoch, run.schedule.lr, c=colour, alpha=0.8)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="one-cycle LR schedule")
    fig.legend(loc="outside right upper", fontsize=8, ncols=columns)
    return fig


def configuration_colours(count):
    """matplotlib's ten distinct colours, or beyond ten one colour each from a colormap, in order
    (a sweep's points from its lowest value to its highest)."""
    if count <= 10:
        return [f"C{k}" for k in range(count)]
    return list(plt.get_cmap("viridis")(np.linspace(0, 0.9, count)))  # its last tenth is too pale on white
