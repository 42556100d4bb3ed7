"""A group's own settings, known before torch loads: its grid or search space, its workers, where its
study is kept, and what makes two commands the same group."""
import pytest

from cifar10_fast.core.config import SWEEPABLE, UsageError, preset, record
from cifar10_fast.core.groups import (
    Range,
    group_key,
    group_problems,
    redacted,
    search_space,
    storage_problem,
    sweep_grid,
    visible_gpus,
    without_password,
    worker_count,
)


def test_the_sweep_grid_is_every_combination():
    assert sweep_grid(["lr_max=1e-3,2e-3", "width=8,16"]) == [
        {"lr_max": 1e-3, "width": 8}, {"lr_max": 1e-3, "width": 16},
        {"lr_max": 2e-3, "width": 8}, {"lr_max": 2e-3, "width": 16}]
    assert sweep_grid(()) == [{}]
    assert SWEEPABLE["width"] is int and SWEEPABLE["lr_max"] is float


def test_a_search_space_is_ranges_of_sweepable_settings():
    assert search_space(["lr_max=1e-4:1e-2:log", "width=8:32"]) == {
        "lr_max": Range("lr_max", 1e-4, 1e-2, True), "width": Range("width", 8, 32, False)}
    for bad, says in (("colour=1:2", "cannot be searched"), ("lr_max=1e-2:1e-4", "LOW below HIGH"),
                      ("lr_max=0:1:log", "a log scale needs LOW above 0"), ("lr_max=a:b", "LOW and HIGH float"),
                      ("lr_max=1:2:cubic", "KEY=LOW:HIGH:log")):
        with pytest.raises(UsageError, match=says):
            search_space([bad])


@pytest.mark.parametrize("given,problem", [
    (dict(trials=5), "--trials goes with --search"),
    (dict(holdout=100), "--holdout goes with --search"),
    (dict(search=("lr_max=1e-4:1e-2",), sweep=("wd=0.01,0.02",)), "--search and --sweep do not go together"),
    (dict(search=("lr_max=1e-4:1e-2",), runs=3), "--runs goes with --sweep"),
    (dict(parallel=0), "--parallel must be positive"),
    (dict(final_runs=0), "--final-runs must lie in [1, 100]"),
    (dict(storage="redis://x", parallel=2), "is no database URL"),
    (dict(storage="sqlite:///study.db", parallel=2), "SQLite is no database for 2 workers"),
])
def test_a_groups_settings_that_cannot_run_are_named(given, problem):
    assert any(problem in line for line in group_problems(preset("seed", **given)))


def test_a_storage_password_is_never_shown():
    url = "postgresql://me:s3cret@db.example:5432/studies"
    assert redacted(url) == "postgresql://me:***@db.example:5432/studies"
    assert record(preset("seed", storage=url))["storage"] == redacted(url)
    assert without_password(f"could not connect to {url}: s3cret refused", url) == (
        "could not connect to postgresql://me:***@db.example:5432/studies: *** refused")
    assert "s3cret" not in storage_problem("redis://me:s3cret@x", 2)


def test_workers_are_one_per_visible_gpu_or_one_on_a_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"] and worker_count(preset("seed")) == 2
    assert worker_count(preset("seed", device="cpu")) == 1 and worker_count(preset("seed", parallel=3)) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and worker_count(preset("seed")) == 1


def test_the_same_command_on_the_same_images_is_the_same_group_wherever_and_however_it_runs():
    """A second machine whose copy of the data lay at another path started a study of its own: the
    two never shared their --storage's."""
    config = preset("seed", sweep=("lr_max=1e-3,2e-3",), runs=2, data_given="/home/me/cifar10.tgz")
    assert group_key(config, "images") == group_key(preset(
        "seed", sweep=("lr_max=1e-3,2e-3",), runs=2, parallel=4, device="cuda", storage="postgresql://a:b@h/d",
        out="elsewhere", data_given="/data/cifar10.tgz"), "images")
    assert group_key(config, "images") != group_key(preset("seed", sweep=("lr_max=1e-3,3e-3",), runs=2), "images")
    assert group_key(config, "images") != group_key(config, "other images")


# Hostile input, round 5 ----------------------------------------------------------------------

@pytest.mark.parametrize("url,leaked", [
    ("postgresql://me:pa#ss@db/studies", "pa#ss"),  # the database reads pa#ss as the password; a URL parser,
    ("postgresql://me:pa/ss@db/studies", "pa/ss"),  # its # / ? as the end of the host: no password to hide
    ("postgresql://me:pa?ss@db/studies", "pa?ss"),
    ("postgresql://me:p@ss@db/studies", "ss"),  # the driver's error named the host 'ss@db'
])
def test_a_password_a_url_parser_reads_otherwise_is_refused_and_never_shown(url, leaked):
    """The password was recorded whole in study.json and the group's lines, or its end shown in the
    driver's error, where it held a character a URL gives a meaning to."""
    assert leaked not in redacted(url) and redacted(url) == "postgresql://me:***@db/studies"
    problem = storage_problem(url, 1)
    assert problem == ("--storage postgresql://me:***@db/studies: its password holds @, /, ? or #, which a URL reads "
                       "as the end of the password or of the host: write each percent-encoded (%40, %2F, %3F, %23)")
    assert storage_problem("postgresql://me:p%40ss%23@db/studies", 1) is None


def test_an_sqlite_study_in_memory_or_in_a_folder_that_is_not_there_is_refused(tmp_path):
    """sqlite:// (in memory) hung the group for good; a missing folder was found after torch loaded,
    with the fix for a server that does not run."""
    assert "is a database in memory, gone when the command ends" in storage_problem("sqlite://", 1)
    assert "is a database in memory" in storage_problem("sqlite:///:memory:", 1)
    (tmp_path / "afile").write_text("a file")
    for folder in (tmp_path / "nope", tmp_path / "afile"):
        assert storage_problem(f"sqlite:///{folder}/study.db", 1) == (
            f"--storage sqlite:///{folder}/study.db: {folder} is not a folder: give a database file in an existing "
            "folder")
    assert storage_problem(f"sqlite:///{tmp_path}/study.db", 1) is None


def test_more_workers_than_cores_are_refused(monkeypatch):
    """--parallel 100000 started a process with torch for each, on a machine of 2 cores."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert "--parallel 5 is more than the 4 cores of this machine" in " ".join(
        group_problems(preset("seed", runs=8, parallel=5)))
    assert not list(group_problems(preset("seed", runs=8, parallel=4)))
