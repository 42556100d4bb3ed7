"""The study of a group: its trials as runs, queued again when their worker stopped or was lost,
and a search's pruning, once an epoch."""
import json
import os

import optuna
import pytest
import torch
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy

from cifar10_fast.core.config import preset
from cifar10_fast.core.errors import BadInput
from cifar10_fast.core.run_folder import FINISHED_RUN, write_study
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.experiments.runner import failures
from cifar10_fast.experiments.study import Group, PruneAtMedian, mend_journal, superseded
from cifar10_fast.training.recording import record_on_device
from customresnet import CustomResNet


def new_group(config, group_dir):
    """The Group of a group folder as the runner makes it: its study.json names its study."""
    group_dir.mkdir(parents=True, exist_ok=True)
    write_study(group_dir, {"study": "cifar10-fast-test", "folder": group_dir.name})
    return Group(config, group_dir)


def test_a_grid_is_each_point_and_seed_enqueued_once_however_often_it_is_prepared(tmp_path):
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",), runs=2), tmp_path)
    study = group.study()
    group.prepare(study)
    group.prepare(group.study())  # the same command run again, or a second machine's start
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(trial.user_attrs["point"] for trial in waiting) == sorted(
        f'{{"lr_max": {lr}, "seed": {seed}}}' for lr in (0.001, 0.002) for seed in (0, 1))
    assert group.not_started(study) == 4


# "done": a stop between the trial's last record and Optuna's took it for a failure of its own, which
# was neither queued again nor let the group finish ("1 run failed ...: done").
@pytest.mark.parametrize("recorded", ["interrupted", "done"])
def test_a_stopped_trial_is_queued_again_once_with_its_point_and_is_no_failure(tmp_path, recorded):
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",)), tmp_path)
    study = group.study()
    group.prepare(study)
    trial = study.ask()
    trial.set_user_attr("outcome", recorded)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    group.prepare(study)
    group.prepare(study)
    trials = study.get_trials()
    retries = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retries) == 1 and retries[0].params == trial.params and superseded(trials) == {trial.number}
    assert failures(group) == []


def test_a_trial_whose_worker_was_killed_is_queued_again(tmp_path):
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",)), tmp_path)
    study = group.study()
    group.prepare(study)
    trial = study.ask()
    trial.set_user_attr("host", __import__("socket").gethostname())
    trial.set_user_attr("pid", 2**22 + 7)  # no such process
    group.prepare(study)
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL
    assert any(t.user_attrs.get("retry_of") == trial.number for t in study.trials)


def test_a_trial_below_the_median_of_the_others_at_an_epoch_stops_there_and_its_run_is_whole(tiny_folder):
    """Pruning reads the held-out accuracy the Recorder logged at each epoch's end: no read of its own."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                                        n_warmup_steps=1))
    for _ in range(2):  # two trials that did far better at every epoch
        done = study.ask()
        for epoch in range(4):
            done.report(0.99, epoch)
        study.tell(done, 0.99)
    trial = study.ask()
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu", seed=0)
    torch.manual_seed(0)
    learn = record_on_device(Learner(dls, CustomResNet(width=4), loss_func=CrossEntropyLossFlat(), metrics=accuracy))
    pruning = PruneAtMedian(trial)
    with learn.no_bar():
        learn.fit(4, 1e-3, cbs=[pruning])  # fastai's CancelFitException ends the fit cleanly
    assert pruning.pruned and len(learn.recorder.values) == 2  # stopped at the end of epoch 2, the first after warm-up
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 1]


# hostile input, round 5: a group folder renamed ------------------------------------------------

def test_a_renamed_group_folder_goes_on_with_its_stopped_runs(tmp_path):
    """`mv runs/<time>-group runs/lr-group`, then --resume runs/lr-group: its run stopped with 2 epochs
    saved was trained again from the start in a new folder, the saved one left behind."""
    out = tmp_path / "runs"
    made = out / "20250101-120000-group"
    made.mkdir(parents=True)
    write_study(made, {"study": "cifar10-fast-test", "folder": made.name})
    stopped = out / "20250101-120001-seed1"
    stopped.mkdir()
    (stopped / "config.json").write_text(json.dumps({"group": made.name}))
    (stopped / "checkpoint.json").write_text(json.dumps({"epochs_done": 2}))
    renamed = made.rename(out / "lr-group")
    group = Group(preset("seed", runs=2, out=str(out)), renamed)
    assert group.member({}, 1, data=None).resume == str(stopped)



def a_journal(group_dir):
    config = preset("seed", sweep=("lr_max=1e-3,2e-3",))
    new_group(config, group_dir).prepare(Group(config, group_dir).study())
    return config, group_dir / "study.journal"


def test_a_study_journal_cut_short_loses_only_its_last_record(tmp_path, capsys):
    """A study.journal whose last line a killed process or a full disk cut short: Optuna appended the
    next record to it, and --resume of the group ended in a JSONDecodeError's traceback."""
    config, journal = a_journal(tmp_path)
    journal.write_bytes(journal.read_bytes()[:-40])
    mend_journal(tmp_path)
    assert capsys.readouterr().err.startswith(f"warning: {journal} ended in a record cut short")
    group = Group(config, tmp_path)
    group.prepare(group.study())
    assert len(Group(config, tmp_path).study().trials) == 2


def test_a_study_journal_written_over_is_one_line(tmp_path):
    _, journal = a_journal(tmp_path)
    journal.write_text("garbage{{\n" + journal.read_text())
    with pytest.raises(BadInput, match=f"^{journal} is damaged \\(its line 1 is no record of Optuna's\\): the "
                                       "group's study cannot be read; start the group again"):
        mend_journal(tmp_path)


def test_a_run_that_finished_before_its_trial_was_told_is_taken_not_trained_again(tmp_path):
    """SIGTERM between a run's last file and the study's record of it: the next start queued the trial
    again and trained its point a second time, in a new folder."""
    out = tmp_path / "runs"
    group_dir = out / "20250101-120000-group"
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",), out=str(out)), group_dir)
    study = group.study()
    group.prepare(study)
    trial = study.ask()
    its_name = group.member(*group.trial_settings(trial), data=None).name
    finished = out / f"20250101-120001-{its_name}"
    finished.mkdir()
    for name in FINISHED_RUN:
        (finished / name).write_text("{}")
    (finished / "config.json").write_text(json.dumps({"group": group_dir.name}))
    (finished / "summary.json").write_text(json.dumps({"final_accuracy": 0.5, "fit_seconds": 3.0}))
    trial.set_user_attr("host", __import__("socket").gethostname())
    trial.set_user_attr("pid", 2**22 + 7)  # its worker gone

    trained = []

    def train(config, data, callbacks):
        trained.append(config.name)
        return out / config.name, {"final_accuracy": 0.25, "fit_seconds": 2.0}

    group.prepare(study)
    group.work(train, data=None)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trained) == 1 and trained[0] != its_name
    assert sorted(t.value for t in complete) == [0.25, 0.5]
    assert {t.user_attrs["run"] for t in complete if t.value == 0.5} == {finished.name}


def test_a_trial_stopped_before_its_run_began_is_queued_again(tmp_path, monkeypatch):
    """A stop while a worker set its next trial up (between Optuna's ask and the run) failed the
    trial as if on its own: the next start never queued it again, and the group ended a point short."""
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",)), tmp_path)
    study = group.study()
    group.prepare(study)

    def stopped(*settings, **data):
        raise KeyboardInterrupt

    monkeypatch.setattr(group, "member", stopped)
    with pytest.raises(KeyboardInterrupt):
        group.work(train=None, data=None)
    failed, = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed.user_attrs["outcome"] == "interrupted" and failed.user_attrs["pid"] == os.getpid()
    told_nothing = study.ask()  # stopped inside Optuna's own code, before run_trial: no outcome at all
    study.tell(told_nothing, state=optuna.trial.TrialState.FAIL)
    group.prepare(study)
    retries = [trial.user_attrs.get("retry_of") for trial in study.get_trials()]
    assert failed.number in retries and told_nothing.number in retries


def test_a_run_folder_stopped_before_its_config_was_written_is_no_member(tmp_path):
    """The next start of a group stopped as a run folder was made: its worker read that folder's
    config.json, which was never written, and ended in a FileNotFoundError's traceback."""
    out = tmp_path / "runs"
    group = new_group(preset("seed", sweep=("lr_max=1e-3,2e-3",), out=str(out)), out / "20250101-120000-group")
    config = group.member({"lr_max": 1e-3}, 0, data=None)
    (out / f"20250101-120001-{config.name}").mkdir()
    assert group.member({"lr_max": 1e-3}, 0, data=None).resume is None and group.finished_untold(config) is None
