"""The README's commands, as typed: every command of its ```bash blocks, read from README.md, runs
in README order from a fresh working folder that mirrors the checkout, with relative paths and
default flags, and what the README promises of it is checked: the files of its run folder, its
row of runs/index.csv, the lines it prints.

Only the compute is thinned, never a command line: CIFAR10_DATA is a tiny data set of flat-colour
images at the path the Makefile and CI give (1,000 training images: one batch of the default 512 an
epoch, and the --subset 1000 of the README's sweep; 20 test images), and thin_model/sitecustomize.py
makes the recipe's full-width CustomResNet a width-4 copy (at batch 512 on two CPU cores a step
takes 0.09 s at width 4, 0.56 s at width 8)."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from cifar10_fast.core.run_folder import MLFLOW_ARTIFACTS
from tests.conftest import (
    CLASSES,
    FINDER_FILES,
    REPO,
    TRAINING_FILES,
    class_image,
    tensorboard_scalars,
    write_folder,
    write_tgz,
)

README = REPO / "README.md"
THIN_MODEL = Path(__file__).parent / "thin_model"
DATA = "../shared/data/cifar10-jpeg.tgz"  # where the Makefile and .ci/run look, from the checkout
REFERENCE = REPO / "models" / "customresnet-cifar10.safetensors"
COMMAND_TIMEOUT_S = 600

# The README's commands this test does not run, and why; each must match a command there.
NOT_RUN = {
    r"^make test$": "CI runs `make test`, which runs this test: it cannot run itself",
    r"^\.venv/bin/accelerate launch --multi_gpu ": "needs several GPUs, which CI lacks "
                                                   "(tests/test_distributed.py trains two processes on CPUs)",
    r"^mlflow ui ": "needs the full mlflow 3.18.0 (its UI), whose mlflow-tracing the package index here lacks; "
                    "tests/training/test_tracking.py reads the same database with MLflow's client",
    r"--sweep lr_max=2e-3,4e-3,8e-3 --runs 3 --name lrs$": "9 runs of the recipe's 24 epochs, for GPUs: "
                                                          "tests/experiments/test_runner.py trains a grid with two "
                                                          "workers",
    r"--storage postgresql://USER:PASSWORD@db-host": "needs a database server on db-host: "
                                                     "tests/experiments/test_runner.py runs two commands on one",
}

# The README's commands that need more than the session's 1,000 training images: each runs in a
# session of its own whose data set has 5,000.
NEEDS_MORE_DATA = [r"--subset 5000 "]


# What a README command holds in place of what the test has, rewritten in this order.
def interrupted_run(match, session):
    return session.interrupted_run()


def finished_run(match, session):
    return session.newest("runs/*/model.safetensors").parent


def example_folder(match, session):
    return session.newest(f"runs/*-{match[1]}")


REWRITES = [
    (r"^make setup && ", lambda match, session: ""),  # CI has run `make setup`; the python part runs
    (r"/path/to/[\w.-]+\.tgz", lambda match, session: DATA),  # the user's copy: the tiny data set
    (r"\[(--[^][]+)\]", lambda match, session: match[1]),  # optional flags, shown in brackets: given
    (r"(?<=--resume )runs/<run>", interrupted_run),  # a run that a SIGTERM stopped, made first
    (r"(?<=--run )runs/<run>", finished_run),  # the newest finished run
    (r"runs/<run>(?=/)", finished_run),  # a file of a run, in a Python snippet
    (r"runs/\d{8}-\d{6}-(\S+)", example_folder),  # a folder an example names: the newest of that name
]


def readme_commands():
    """The commands of README.md's ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^ *```bash\n(.*?)^ *```", README.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"(^|\s)#.*", "", line).split())
            if command:
                commands.append(command)
    return commands


def readme_snippets():
    """The code of README.md's ```python blocks."""
    return re.findall(r"^ *```python\n(.*?)^ *```", README.read_text(), flags=re.S | re.M)


def not_run_reason(command):
    return next((reason for pattern, reason in NOT_RUN.items() if re.search(pattern, command)), None)


def write_images(work):
    """image.png and more_images/, as the predict commands name them."""
    Image.fromarray(class_image(CLASSES.index("cat"))).save(work / "image.png")
    (work / "more_images").mkdir()
    for k in (1, 8):
        Image.fromarray(class_image(k)).save(work / "more_images" / f"{CLASSES[k]}.png")


def mirror_checkout(work):
    """A fresh clone after `make setup`: links to the checkout's tracked files and folders and to
    the .venv that runs this test, with a runs/ of its own."""
    work.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in sorted({Path(path).parts[0] for path in tracked.splitlines()}):
        (work / name).symlink_to(REPO / name)
    (work / ".venv").symlink_to(sys.prefix)


class Session:
    """A shell in the working folder: the README's commands run in it one after another, and what
    one exports holds for the next."""

    def __init__(self, tmp, n_train=100):
        self.work, self.tmp = tmp / "checkout", tmp
        mirror_checkout(self.work)
        write_images(self.work)
        archive = tmp / "shared" / "data" / "cifar10-jpeg.tgz"
        archive.parent.mkdir(parents=True)
        write_tgz(write_folder(tmp / "cifar10", n_train=n_train, n_test=2), archive, "cifar10")
        # The thin model first on the path; the checkout's modules for it to import.
        self.env = {**os.environ, "CIFAR10_DATA": DATA, "CIFAR10_CACHE": str(tmp / "cache"),
                    "PYTHONPATH": os.pathsep.join([str(THIN_MODEL), str(self.work)])}

    def run(self, command):
        """`command` in bash, as typed at a prompt; the environment it leaves is the next one's."""
        environment = self.tmp / "environment"
        done = subprocess.run(["bash", "-c", f'{command}\nstatus=$?\nenv -0 > "{environment}"\nexit $status'],
                              cwd=self.work, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        self.env = dict(line.split("=", 1) for line in environment.read_text().split("\0") if "=" in line)
        return done

    def newest(self, pattern):
        """The newest path matching `pattern`, relative to the working folder, as a user types it."""
        found = sorted(self.work.glob(pattern), key=lambda path: path.stat().st_mtime)
        assert found, f"nothing in {self.work} matches {pattern}"
        return found[-1].relative_to(self.work)

    def run_folders(self):
        """The run and group folders under runs/ (not MLflow's store of their files)."""
        runs = self.work / "runs"
        return {path for path in runs.iterdir() if path.is_dir() and path.name != MLFLOW_ARTIFACTS} if runs.is_dir() \
            else set()

    def interrupted_run(self):
        """A training run stopped by SIGTERM in its third epoch, as a job scheduler stops one: it
        exits with status 130 and prints the command that resumes it. Its LRs are given, so that
        no range test runs first. Two epochs are logged first: an epoch's line is written just
        before its weights are copied, so a signal right after the first line finds no copy."""
        before = self.run_folders()
        process = subprocess.Popen([".venv/bin/python", "train_fastai.py", "--epochs", "24", "--lr-min", "1e-3",
                                    "--lr-max", "1e-2"], cwd=self.work, env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not any(epochs_logged(run) >= 2 for run in self.run_folders() - before):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
        run, = (path.relative_to(self.work) for path in self.run_folders() - before)
        assert process.returncode == 130, err[-3000:]
        assert err.strip().splitlines()[-1].endswith(f"Resume with: .venv/bin/python train_fastai.py --resume {run}")
        return run

    def as_run_here(self, command):
        for pattern, replace in REWRITES:
            command = re.sub(pattern, lambda match: str(replace(match, self)), command)
        return command


def epochs_logged(run_dir):
    history = run_dir / "history.csv"
    return len(history.read_text().splitlines()) - 1 if history.is_file() else 0


def flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def positional(argv, *options):
    """A command's arguments after the script that are neither flags nor the values of `options`."""
    values = {flag(argv, name) for name in options}
    return [arg for arg in argv[2:] if not arg.startswith("-") and arg not in values]


# What each command promises --------------------------------------------------------------------

def check_finished_run(session, run_dir, printed):
    """Every output of a finished training run, its index row, and its last line on screen."""
    config = json.loads((session.work / run_dir / "config.json").read_text())
    for name in TRAINING_FILES + (FINDER_FILES if config["lr_source"] == "lr_find.json" else []):
        assert (session.work / run_dir / name).stat().st_size > 0, f"{run_dir}/{name}"
    assert not (session.work / run_dir / "checkpoint.pth").exists()
    assert run_dir.name in pd.read_csv(session.work / "runs" / "index.csv").run.tolist()
    tested = "held-out" if config["holdout"] else "test"  # a search's trial is never tested on the test set
    last_line = rf"final {tested} accuracy [\d.]+% .*; outputs in {re.escape(str(run_dir))}$"
    assert re.search(last_line, printed, re.M), printed


def check_training(argv, done, session, new_folders):
    assert done.returncode == 0, done.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "CPU only: this run will take " in done.stdout  # timed on its first batches
    if "--resume" in argv:
        check_finished_run(session, Path(flag(argv, "--resume")), done.stdout)
    elif "--find-lr" in argv:
        run_dir, = new_folders
        for name in ["config.json", *FINDER_FILES]:
            assert (run_dir / name).stat().st_size > 0, name
        assert re.search(r"^LR range test: .*LRMIN = \S+, LRMAX = \S+$", done.stdout, re.M), done.stdout
    elif "--runs" in argv or "--sweep" in argv or "--search" in argv:
        group, = (path for path in new_folders if path.name.endswith("-group"))
        assert (group / "compare.png").is_file()
        summary = json.loads((group / "summary.json").read_text())
        members = summary["members"] + summary.get("final", {}).get("members", [])  # a search's trials, then finals
        assert {group.parent / name for name in members} == new_folders - {group}
        for name in members:
            check_finished_run(session, Path("runs") / name, done.stdout)
        assert "mean, std, min, max over seeds:" in done.stdout  # the table it ends with
        assert f"group summary, compare.png and report.html in {group.relative_to(session.work)}" in done.stdout
    else:
        run_dir, = new_folders
        check_finished_run(session, run_dir.relative_to(session.work), done.stdout)
        phases = json.loads((run_dir / "summary.json").read_text())["phases"]
        assert phases["start_up"] > 0 and phases["fit"] > 0  # as a script: from the process's start


def check_compare(argv, done, session, new_folders):
    assert done.returncode == 0, done.stderr[-3000:]
    png = flag(argv, "--png") or "compare.png"
    assert (session.work / png).stat().st_size > 0 and f"figure: {png}" in done.stdout
    given = positional(argv, "--png", "--out")
    folders = [folder for pattern in given for folder in session.work.glob(pattern)]  # as the shell expands them
    assert len(folders) >= len(given)
    for folder in folders:
        members = json.loads((folder / "summary.json").read_text())["members"]
        assert all(name in done.stdout for name in members)
    assert "mean, std, min, max over seeds:" in done.stdout


def check_predict(argv, done, session, new_folders):
    if flag(argv, "--run") is None and not REFERENCE.is_file():  # not committed yet: the README says so
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert re.fullmatch(r"error: the reference checkpoint \S+ is not here: .*", done.stderr.strip())
        return
    assert done.returncode == 0, done.stderr[-3000:]
    images = positional(argv, "--run", "--topk", "--csv")
    assert all(image.rstrip("/") in done.stdout for image in images)
    if flag(argv, "--csv"):
        assert (session.work / flag(argv, "--csv")).stat().st_size > 0


def check_shell(argv, done, session, new_folders):
    assert done.returncode == 0, done.stderr


CHECKS = {"train_fastai.py": check_training, "compare.py": check_compare, "predict.py": check_predict,
          "export": check_shell}


def serve_tensorboard(argv, session):
    """`tensorboard --logdir runs` as typed, a server: started, asked over HTTP for the test accuracy
    of the newest run that has event files (one per epoch, the last its summary.json's), and stopped
    by its PID. It says its address in a line of its own; its port is 6006 or the next free one."""
    server = subprocess.Popen(argv, cwd=session.work, env=session.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        address = next(re.search(r"at (http://127\.0\.0\.1:(\d+)/)", line) for line in server.stderr
                       if re.search(r"at http://127\.0\.0\.1:\d+/", line))
        run = session.newest("runs/*/events.out.tfevents.*").parent
        accuracy = tensorboard_scalars(int(address[2]), run.name, "accuracy/test")
    finally:
        server.terminate()
        server.wait(timeout=60)
    summary = json.loads((session.work / run / "summary.json").read_text())
    assert [step for _, step, _ in accuracy] == list(range(summary["epochs"]))
    assert accuracy[-1][2] == pytest.approx(summary["final_accuracy"])


SERVERS = {".venv/bin/tensorboard": serve_tensorboard}  # started, checked while they run, stopped


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Session(tmp_path_factory.mktemp("readme"))


@pytest.fixture(scope="module")
def session_with_more_data(tmp_path_factory):
    return Session(tmp_path_factory.mktemp("readme-more-data"), n_train=500)


@pytest.mark.parametrize("command", readme_commands(), ids=str)
def test_readme_command(command, request):
    reason = not_run_reason(command)
    if reason:
        pytest.skip(reason)
    more_data = any(re.search(pattern, command) for pattern in NEEDS_MORE_DATA)
    session = request.getfixturevalue("session_with_more_data" if more_data else "session")
    typed = session.as_run_here(command)
    argv = shlex.split(typed)
    if argv[0] in SERVERS:
        SERVERS[argv[0]](argv, session)
        return
    kind = argv[1] if argv[0] == ".venv/bin/python" else argv[0]
    assert kind in CHECKS, f"README command {command!r} is neither run by this test nor listed in NOT_RUN"
    before = session.run_folders()
    done = session.run(typed)
    CHECKS[kind](argv, done, session, session.run_folders() - before)


@pytest.mark.parametrize("snippet", readme_snippets(), ids=lambda snippet: snippet.splitlines()[-1])
def test_readme_python_snippet(snippet, session):
    """Each snippet as a user pastes it into a file and runs it with the project's Python, after the
    README's commands have trained a run: what it prints ends with class names of the data."""
    script = session.tmp / "snippet.py"
    script.write_text(session.as_run_here(snippet))
    done = subprocess.run([".venv/bin/python", str(script)], cwd=session.work, env=session.env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.strip().splitlines()[-1]
    assert any(name in printed for name in CLASSES), printed


def test_every_command_not_run_or_run_apart_is_in_the_readme():
    """NOT_RUN and NEEDS_MORE_DATA speak of the README as it is."""
    for pattern in [*NOT_RUN, *NEEDS_MORE_DATA]:
        assert any(re.search(pattern, command) for command in readme_commands()), pattern
