"""A group as users run it: trained by workers, each trial once; stopped and finished by the same
command; a worker killed outright; two machines on one PostgreSQL study."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from cifar10_fast.core.config import preset
from cifar10_fast.core.errors import BadInput
from cifar10_fast.experiments.runner import group_folder
from tests.conftest import REPO

GRID = ["--sweep", "lr_max=1e-3,2e-3,3e-3", "--runs", "2"]
POINTS = {(f"lr_max={lr:g}", seed) for lr in (1e-3, 2e-3, 3e-3) for seed in (0, 1)}


def command(data, out, *flags, epochs=1):
    """train_fastai.py as a user types it for a tiny group: untracked, a thin model, given LRs (LRMAX
    where the group does not set it for each run)."""
    lr_max = [] if any(flag.startswith("lr_max=") for flag in flags) else ["--lr-max", "1e-3"]
    return [sys.executable, str(REPO / "train_fastai.py"), "--data", str(data), "--out", str(out), "--width", "4",
            "--bs", "16", "--lr-min", "1e-4", *lr_max, "--epochs", str(epochs), "--track", "none", *flags]


def run(argv, cwd):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


def start(argv, cwd):
    """A command in a session of its own, as in a terminal: a signal to it reaches its workers too."""
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def members(*outs):
    """(point, seed) of every finished run of the groups in `outs`, and every run folder begun."""
    finished, begun = [], []
    for out in outs:
        for run_dir in (path for path in Path(out).glob("2*") if not path.name.endswith("-group")):
            try:
                config = json.loads((run_dir / "config.json").read_text())
            except (FileNotFoundError, ValueError):  # a run just begun: its config.json is not written yet
                continue
            begun.append(run_dir)
            if (run_dir / "report.html").is_file():
                finished.append((config["sweep_point"], config["seed"]))
    return finished, begun


def the_study(group):
    return optuna.load_study(study_name=json.loads((group / "study.json").read_text())["study"],
                             storage=optuna.storages.JournalStorage(
                                 optuna.storages.journal.JournalFileBackend(str(group / "study.journal"))))


def wait_for(condition, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_grid_with_two_workers_trains_every_point_once_and_summarises_the_study(tmp_path, tiny_folder):
    done = run(command(tiny_folder, tmp_path / "runs", *GRID, "--parallel", "2"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    finished, begun = members(tmp_path / "runs")
    assert sorted(finished) == sorted(POINTS) and len(begun) == 6  # each point and seed once
    assert {line[:10] for line in done.stdout.splitlines() if line.startswith("[worker")} == {"[worker 0]",
                                                                                              "[worker 1]"}
    group, = (tmp_path / "runs").glob("*-group")
    summary = json.loads((group / "summary.json").read_text())
    assert summary["trials"]["complete"] == 6 and sum(summary["trials"].values()) == 6
    assert [(point["point"], point["runs"]) for point in summary["points"]] == [
        ("lr_max=0.001", 2), ("lr_max=0.002", 2), ("lr_max=0.003", 2)]
    assert (group / "compare.png").is_file() and len(summary["members"]) == 6


def test_a_group_stopped_by_sigterm_is_finished_by_the_same_command_training_nothing_twice(tmp_path, tiny_folder):
    argv = command(tiny_folder, tmp_path / "runs", *GRID, "--parallel", "2", epochs=6)
    process = start(argv, tmp_path)
    wait_for(lambda: len(members(tmp_path / "runs")[0]) >= 1 and any(
        (run_dir / "checkpoint.json").is_file() or (run_dir / "history.csv").is_file()
        for run_dir in members(tmp_path / "runs")[1] if not (run_dir / "report.html").is_file()), process)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    line, = err.strip().splitlines()[-1:]
    assert line.startswith("interrupted: ") and "Run the same command again to finish the group" in line
    stopped = {run_dir for run_dir in members(tmp_path / "runs")[1] if (run_dir / "checkpoint.json").is_file()}
    done = run(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "going on with the group of the same settings in" in done.stdout
    finished, begun = members(tmp_path / "runs")
    assert sorted(finished) == sorted(POINTS)
    assert all((run_dir / "report.html").is_file() for run_dir in stopped)  # each went on from its checkpoint


def test_a_worker_killed_outright_leaves_its_trial_to_the_next_start(tmp_path, tiny_folder):
    """SIGKILL (out of memory, a lost machine) leaves a trial running in the journal: the next start,
    here by --resume GROUP_FOLDER, queues it again and trains it."""
    argv = command(tiny_folder, tmp_path / "runs", "--sweep", "lr_max=1e-3,2e-3", "--parallel", "2", epochs=40)
    process = start(argv, tmp_path)
    wait_for(lambda: sum(1 for run_dir in members(tmp_path / "runs")[1] if (run_dir / "history.csv").is_file()) == 2,
             process)
    worker = int(subprocess.run(["pgrep", "-P", str(process.pid), "-f", "multiprocessing.spawn"], capture_output=True,
                                text=True).stdout.split()[-1])
    os.kill(worker, signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "was killed by SIGKILL" in err and "its trial is queued again" in err, err
    group, = (tmp_path / "runs").glob("*-group")
    done = run([sys.executable, str(REPO / "train_fastai.py"), "--resume", str(group), "--track", "none"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(members(tmp_path / "runs")[0]) == [("lr_max=0.001", 0), ("lr_max=0.002", 0)]


def test_two_machines_share_a_postgresql_study_and_train_every_point_once(tmp_path, tiny_folder, postgres):
    """The same command started twice at once, each in a --out of its own and with its own copy of the
    data at another path, as on two machines, both with --storage: they join one study, and between
    them train each point and seed once. The password of --storage is in no file, log or index row."""
    url = postgres.replace("postgres@", "postgres:s3cret-word@")  # trust authentication: any password is taken
    copies = {"a": tiny_folder, "b": shutil.copytree(tiny_folder, tmp_path / "elsewhere" / "cifar10")}
    argv = [command(copies[machine], tmp_path / machine, *GRID, "--parallel", "1", "--storage", url, "--name",
                    "shared") for machine in ("a", "b")]
    machines = [subprocess.Popen(each, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for each in argv]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs
    finished, begun = members(tmp_path / "a", tmp_path / "b")
    assert sorted(finished) == sorted(POINTS) and len(begun) == 6
    for out in ("a", "b"):
        group, = (tmp_path / out).glob("*-shared-group")
        summary = json.loads((group / "summary.json").read_text())
        assert summary["trials"]["complete"] == 6 and summary["storage"].startswith("postgresql://postgres:***@")
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not [path for path in written if b"s3cret-word" in path.read_bytes()]
    assert "s3cret-word" not in "".join(out + err for out, err in outputs)


def test_an_unreachable_database_is_one_line_naming_it_without_its_password(tmp_path, tiny_folder):
    done = run(command(tiny_folder, tmp_path / "runs", *GRID, "--storage",
                       "postgresql://me:s3cret-word@127.0.0.1:9/studies"), tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: cannot reach the study's database postgresql://me:***@127.0.0.1:9/studies")
    assert "s3cret-word" not in done.stderr + done.stdout


def search(data, out, cwd):
    """A tiny search; its group's summary and the held-out accuracy of each of its trials."""
    done = run(command(data, out, "--search", "lr_max=1e-3:1e-2:log", "--trials", "3", "--holdout", "20",
                       "--final-runs", "1", epochs=2), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    group, = Path(out).glob("*-group")
    return json.loads((group / "summary.json").read_text()), [trial.value for trial in the_study(group).trials]


def test_a_search_never_reads_the_test_set(tmp_path, tiny_folder):
    """Its trials test on training images held out: with every test label shuffled it finds the same
    best point from the same held-out accuracies; only its final run, on the test set, sees them."""
    summary, values = search(tiny_folder, tmp_path / "true", tmp_path)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(tiny_folder, shuffled)
    classes = sorted(path.name for path in (shuffled / "test").iterdir())
    for k, name in enumerate(classes):  # every test image of class k labelled k + 1
        for image in sorted((shuffled / "test" / name).glob("0*")):
            image.rename(shuffled / "test" / classes[(k + 1) % len(classes)] / f"moved-{image.name}")
    summary_shuffled, values_shuffled = search(shuffled, tmp_path / "shuffled-runs", tmp_path)
    assert summary["tested_on"] == "held-out training images" and summary["final"]["tested_on"] == "test set"
    assert summary_shuffled["best"] == summary["best"] and values_shuffled == values
    page = (next((tmp_path / "true").glob("*-group")) / "report.html").read_text()
    assert "held-out training images" in page and "tested on the test set, once" in page
    assert "alt='search_history.png'" in page and "alt='search_importance.png'" in page


# hostile input, round 5: a group is keyed on everything it was built from

def images_hashed(digit, folder):
    """Data as a group sees it: the hash of its images' names and sizes, and where it lies."""
    return SimpleNamespace(fingerprint={"data_sha256": digit * 64}, folder=Path(folder))


def test_a_group_goes_on_only_on_the_images_it_ran_on(tmp_path):
    """The images under --data replaced while a search was stopped: the same command went on with its
    study, its first trials tested on held-out images of the old data, the others on the new."""
    config = preset("seed", runs=2, out=str(tmp_path / "runs"), data_given=str(tmp_path / "cifar10"))
    first = group_folder(config, images_hashed("a", tmp_path / "cifar10"))
    assert group_folder(config, images_hashed("a", tmp_path / "cifar10")) == first
    assert group_folder(config, images_hashed("b", tmp_path / "cifar10")) != first
    with pytest.raises(BadInput, match=f"^{first} ran on other images than {tmp_path / 'cifar10'}"):
        group_folder(replace(config, resume=str(first)), images_hashed("b", tmp_path / "cifar10"))


def test_a_group_folder_from_before_its_images_were_recorded_still_goes_on_by_its_resume(tmp_path):
    config = preset("seed", runs=2, out=str(tmp_path / "runs"))
    older = group_folder(config, images_hashed("a", tmp_path / "cifar10"))
    study = json.loads((older / "study.json").read_text())
    del study["data_sha256"]
    (older / "study.json").write_text(json.dumps(study))
    assert group_folder(replace(config, resume=str(older)), images_hashed("b", tmp_path / "cifar10")) == older
