"""A group, from its folder to its summary: the folder made (or found again, for the same command run
again, or given with --resume), its study prepared, its trials trained by the workers; then what
they trained, as summary.json, compare.png and the table printed; for a search, the point it found
best trained on every training image for --final-runs seeds and tested on the test set, once."""
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from cifar10_fast.core import run_folder
from cifar10_fast.core.config import member, record, redacted
from cifar10_fast.core.errors import BadInput, counted
from cifar10_fast.core.groups import group_key, sweep_grid, worker_count
from cifar10_fast.core.lifecycle import GroupInterrupted, resume_command
from cifar10_fast.core.report import render_group, write_report
from cifar10_fast.experiments.comparison import (
    folder_named,
    format_points,
    load_runs,
    points_table,
    records,
    write_figure,
)
from cifar10_fast.experiments.pictures import write_search_figures
from cifar10_fast.experiments.study import FAILURE, Group, failed_on_its_own, mend_journal, superseded
from cifar10_fast.experiments.workers import WorkerFailed, run_workers
from cifar10_fast.training.outputs import new_run_dir

WAIT_S = 2  # how often a machine done with its own trials looks at the others'


def run_group(config, train, data_of):
    """Every run of the group of `config`, each trained by `train(config, data=data_of(config))`;
    returns the group folder."""
    data = data_of(config)  # set up here first (a decode, once, into the cache the workers read), then checked
    for point in sweep_grid(config.sweep):
        data.check_subset(member(config, point).subset, config.holdout)
    group_dir = group_folder(config, data)
    group = train_group(config, group_dir, train, data, data_of)
    summary = summarize(group, "test set")
    if group.searching:
        final = train_group(final_config(config, group), group_dir, train, data, data_of)
        summary = {**summary, "final": summarize(final, "test set")}
        write_search_figures(group.study(), group_dir)
    run_folder.write_summary(group_dir, summary)
    write_report(group_dir, render_group)
    run_folder.write_study(group_dir, {**run_folder.read_study(group_dir), "finished": True})
    print(f"group summary, {run_folder.COMPARE_PNG} and {run_folder.REPORT} in {group_dir}")
    failed = failures(group)
    if failed:  # bad input of one point fails its run alone: the others are trained and summarised first
        raise BadInput(f"{counted(len(failed), 'run')} of {group.total} of {group_dir} failed, the first: "
                       f"{failed[0]}; the group's summary holds the others")
    return group_dir


def failures(group):
    """What each trial that failed on its own (bad input: a diverging LR, a batch larger than the data)
    said, as its warning did."""
    trials = group.study().get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return [trial.user_attrs[FAILURE] for trial in trials if failed_on_its_own(trial)]


def group_folder(config, data):
    """--resume's group folder; or that of an unfinished group of the same settings on the same
    images in --out (the same command run again goes on with it); or a new one, its settings and
    images recorded. A group's trials are only comparable on one data set: its held-out images
    are drawn from it."""
    images = data.fingerprint["data_sha256"]
    if config.resume:
        recorded = run_folder.read_study(config.resume).get("data_sha256")
        if recorded not in (None, images):  # None: a group folder from before images were recorded
            raise BadInput(f"{config.resume} ran on other images than {data.folder} (their names and sizes differ): "
                           "give --data with the data it ran on, or start a new group")
        mend_journal(config.resume)
        return Path(config.resume)
    key = group_key(config, images)
    same = [folder for folder in sorted(Path(config.out).glob("*-group*")) if run_folder.is_group_folder(folder)
            and run_folder.read_study(folder).get("key") == key and not run_folder.read_study(folder).get("finished")]
    if same:
        print(f"going on with the group of the same settings in {same[-1]}")
        mend_journal(same[-1])
        return same[-1]
    group_dir = new_run_dir(config.out, f"{config.name}-group" if config.name else "group")
    # The study's name is the key's: the same command on the same images, on another machine sharing
    # --storage, joins it.
    run_folder.write_study(group_dir, {"settings": record(config), "key": key, "study": f"cifar10-fast-{key}",
                                       "storage": redacted(config.storage) if config.storage else run_folder.JOURNAL,
                                       "data_sha256": images, "folder": group_dir.name, "finished": False})
    return group_dir


def train_group(config, group_dir, train, data, data_of):
    """The group's trials trained by its workers; a stop (Ctrl-C, SIGTERM) raised as the one line
    that says what the group kept."""
    group = Group(config, group_dir)
    study = group.study()
    group.prepare(study)
    workers = worker_count(config)
    kind = (f"a search of {counted(group.total, 'trial')}" if group.searching else
            f"{counted(len(group.grid), 'run')} ({counted(len(group.grid) // config.runs, 'point')} x "
            f"{counted(config.runs, 'seed')})")
    print(f"group folder: {group_dir}: {kind} by {counted(workers, 'worker')}; study {group.name} in "
          f"{redacted(config.storage) if config.storage else group_dir / run_folder.JOURNAL}")
    try:
        run_workers(config, group_dir, train, data, data_of, workers)
        while wait_for_other_machines(group, study):  # a trial they give up is queued: this machine takes it
            run_workers(config, group_dir, train, data, data_of, workers)
    except KeyboardInterrupt:
        raise GroupInterrupted(interrupted_line(group, study)) from None
    except WorkerFailed as e:
        group.prepare(study)  # the trial it left running, queued again
        raise BadInput(f"{e}, and the group is not finished: its trial is queued again; run the same command again "
                       f"to finish the group, or {resume_command(group_dir)}") from None
    return group


def wait_for_other_machines(group, study):
    """Wait while workers elsewhere (the same command on other machines, on --storage's database)
    train the group's last trials, so that the summary counts them; True where a trial was queued
    again meanwhile (its worker lost: Optuna's heartbeat failed it), for this machine to train."""
    said = False
    while any(trial.state == TrialState.RUNNING for trial in study.get_trials(deepcopy=False)):
        if not said:
            print("waiting for the trials that workers on other machines train, to summarise the group with them")
            said = True
        time.sleep(WAIT_S)
        if group.config.storage:
            optuna.storages.fail_stale_trials(study)  # a machine lost: its trials' heartbeats stopped
        group.prepare(study)  # a worker of this machine killed meanwhile: its trial queued again
        if group.not_started(study):
            return True
    return bool(group.not_started(study))


def final_config(config, group):
    """The settings of a search's final runs: its best point, on every training image (no holdout),
    --final-runs seeds, tested on the test set."""
    best = group.study().best_trial
    return replace(config, **best.params, search=(), trials=None, prune=False, holdout=None, runs=config.final_runs,
                   name="-".join(filter(None, [config.name, "final"])))


def trial_rows(group):
    """A row per finished trial of the group, as a comparison takes a run: its run folder's name,
    its point, its final test (or held-out) accuracy, seconds and flip TTA accuracy."""
    trials = group.study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return pd.DataFrame([{"run": trial.user_attrs.get("run"), "group": folder_named(group.dir),
                          "point": ",".join(f"{key}={value:g}" for key, value in trial.params.items() if key != "seed"),
                          "final_accuracy": trial.value, "fit_seconds": trial.user_attrs.get("fit_seconds"),
                          "tta_accuracy": trial.user_attrs.get("tta_accuracy")} for trial in trials],
                        columns=["run", "group", "point", "final_accuracy", "fit_seconds", "tta_accuracy"])


def summarize(group, tested_on):
    """The group's summary: its study, its trials by state, its finished members and, per point, the
    mean, std, min and max over seeds (printed too); its figure of the members this machine holds."""
    study = group.study()
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(group)
    members = [group.dir.parent / name for name in rows.run if (group.dir.parent / name).is_dir()]
    summary = {"study": group.name, "storage": redacted(group.config.storage) if group.config.storage else
               run_folder.JOURNAL, "members": [path.name for path in members],
               "trials": {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState},
               "sweep": list(group.config.sweep) or None, "runs": group.config.runs}
    if group.searching:
        best = study.best_trial
        held_out = best.user_attrs.get("holdout")
        print(f"search: {counted(len(rows), 'trial')} tested on {held_out} held-out training images (not the test "
              f"set): the best, {best.value:.2%}, at {best.params}")
        return {**summary, "search": list(group.config.search), "tested_on": "held-out training images",
                "holdout": held_out, "best": {"trial": best.number, "params": best.params,
                                              "held_out_accuracy": best.value}}
    table = points_table(rows)
    print(f"final {tested_on} accuracy, " + format_points(table))
    if members:
        write_figure(load_runs(members), group.dir / run_folder.COMPARE_PNG)
    return {**summary, "tested_on": tested_on, "points": records(table)}


def interrupted_line(group, study):
    """What a stopped group kept: its finished runs, and each run a trial was training (its epochs
    saved); how to go on."""
    trials = study.get_trials(deepcopy=False)
    done = sum(trial.state == TrialState.COMPLETE for trial in trials)
    stopped = [trial for trial in trials if trial.state == TrialState.FAIL and trial.number not in superseded(trials)
               and not failed_on_its_own(trial)]
    kept = []
    for run_dir in sorted(group.dir.parent.glob(f"*-{group.config.name or ''}*seed*")):
        progress = run_folder.read_progress(run_dir) if run_folder.has_checkpoint(run_dir) else None
        if progress and run_folder.read_config(run_dir).get("group") in group.folder_names:
            kept.append(f"{run_dir} keeps {counted(progress['epochs_done'], 'epoch')}")
    return (f"interrupted: {done} of {group.total} runs of {group.dir} are done, {counted(len(stopped), 'run')} "
            f"stopped{': ' + '; '.join(kept) if kept else ''}. Run the same command again to finish the group, or "
            f"{resume_command(group.dir)}")
