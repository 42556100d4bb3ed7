"""Every run seen in the trackers: TensorBoard by default, MLflow and W&B on --track, read back with
each one's own reader. One group of two runs is tracked in all three, its second member stopped
by SIGTERM in its second epoch and resumed; no connection leaves the loopback, and nothing is
written to the home folder."""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from wandb.proto import wandb_internal_pb2

import train_fastai
from cifar10_fast.core.trackers import DATABASE_STORE, INSTALL
from cifar10_fast.training import trackers
from cifar10_fast.training.tracking import LOGGED
from tests.conftest import GIVEN_LRS, REPO, TINY, free_port, loopback_only, tensorboard_scalars, train, write_folder
from tests.network_guard import LOG
from tests.training.test_fit import SigtermAt

EPOCH_TAGS = [*LOGGED, "schedule/lr", "schedule/momentum", "speed/images_per_s"]


@pytest.fixture(scope="module")
def tracked_group(tmp_path_factory):
    """A group of 2 seeds, 2 epochs each, tracked in TensorBoard, MLflow and W&B, its second member
    stopped in its second epoch and resumed; returns (out, group folder, members, home folder,
    connections attempted outside the loopback)."""
    tmp = tmp_path_factory.mktemp("tracked")
    data, out, home = write_folder(tmp / "cifar10"), tmp / "runs", tmp / "home"
    home.mkdir()
    made, make_learner = [], train_fastai.make_learner

    def stopping_the_second(*args):
        made.append(make_learner(*args))
        return made[-1].add_cb(SigtermAt(epoch=1, iteration=1)) if len(made) == 2 else made[-1]

    with pytest.MonkeyPatch.context() as mp, loopback_only() as attempts:
        mp.setenv("HOME", str(home))
        mp.setenv("CIFAR10_CACHE", str(tmp / "cache"))
        for variable in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY", "MLFLOW_DISABLE_TELEMETRY"):
            mp.delenv(variable, raising=False)
        mp.setattr(train_fastai, "make_learner", stopping_the_second)
        with pytest.raises(SystemExit) as stopped:
            train_fastai.main([*TINY, "--data", str(data), "--out", str(out), *GIVEN_LRS, "--epochs", "2",
                               "--runs", "2", "--name", "tracked", "--track", "tensorboard", "--track", "mlflow",
                               "--track", "wandb"])
        assert stopped.value.code == 130
        group, = out.glob("*-tracked-group")
        members = sorted(out.glob("*-tracked-seed*"))
        train_fastai.main(["--resume", str(members[1])])
    return out, group, members, home, attempts


def scalars(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()
    return accumulator, {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_nothing_leaves_the_loopback_or_lands_in_the_home_folder(tracked_group):
    out, group, members, home, attempts = tracked_group
    assert attempts == [] and list(home.iterdir()) == []
    assert all((member / "report.html").is_file() for member in members)


def test_tensorboard_shows_each_epoch_once_and_the_run_as_its_summary_says(tracked_group):
    """The second member was stopped in its second epoch and resumed: its curves join up, one step
    an epoch, from two event files."""
    _, _, members, _, _ = tracked_group
    assert len(list(members[1].glob("events.out.tfevents.*"))) == 2
    for member in members:
        accumulator, curves = scalars(member)
        for tag in EPOCH_TAGS:
            assert [event.step for event in curves[tag]] == [0, 1], (member.name, tag)
        final = summary(member)["final_accuracy"]
        assert curves["accuracy/test"][-1].value == pytest.approx(final)
        assert curves["summary/final_accuracy"][-1].value == pytest.approx(final)
        assert set(accumulator.Tags()["images"]) == {"confusion_matrix", "schedule"}  # no range test: LRs given
        assert "config/text_summary" in accumulator.Tags()["tensors"]
        start = plugin_data_pb2.HParamsPluginData.FromString(
            accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["lr_max"].number_value == pytest.approx(1e-3)
        assert start.hparams["group"].string_value == tracked_group[1].name


def test_the_epoch_that_stops_a_run_at_its_target_accuracy_is_tracked(finished_sweep):
    """--target-acc stops the fit at the end of the epoch that reaches it: the trackers see that
    epoch before the stop (the sweep's runs stop after the first of their 2 where it is not at 0%)."""
    out, group, _ = finished_sweep
    stopped = []
    for name in json.loads((group / "summary.json").read_text())["members"]:
        _, curves = scalars(out / name)
        stopped.append(summary(out / name)["stopped_early"])
        assert [event.step for event in curves["accuracy/test"]] == list(range(summary(out / name)["epochs"]))
        assert curves["summary/stopped_early"][-1].value == stopped[-1]
    assert any(stopped)


def test_mlflow_holds_the_group_as_one_experiment_with_each_run_its_epochs_and_files(tracked_group):
    out, group, members, _, _ = tracked_group
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(group.name)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {member.name for member in members}  # the resumed member continued its own run
    for member in members:
        run = runs[member.name]
        assert run.info.status == "FINISHED" and run.data.params["lr_max"] == "0.001"
        history = client.get_metric_history(run.info.run_id, "accuracy/test")
        assert [metric.step for metric in history] == [0, 1]
        assert run.data.metrics["summary/final_accuracy"] == pytest.approx(summary(member)["final_accuracy"])
        files = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        assert {"model.safetensors", "summary.json", "history.csv", "confusion_matrix.png"} <= files
        assert not any(name.startswith("events.out.tfevents") for name in files)
    assert (out / "mlartifacts").is_dir()


def wandb_records(path):
    """The records of a W&B run file (run-<id>.wandb): a 7-byte header, then a LevelDB-style log of
    32 KiB blocks whose records (7-byte header: CRC, length, kind) hold W&B's protobuf Records."""
    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last part of one
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def test_wandb_runs_offline_inside_each_run_folder_as_one_group(tracked_group):
    _, group, members, _, _ = tracked_group
    for member in members:
        offline = sorted((member / "wandb").glob("offline-run-*"))
        assert len(offline) == (2 if member == members[1] else 1)  # the resumed one: a second part, the same id
        records = list(wandb_records(next(offline[-1].glob("run-*.wandb"))))
        run, = (record.run for record in records if record.HasField("run"))
        assert (run.run_group, run.display_name) == (group.name, member.name)
        summary_items = {item.key: item.value_json for record in records if record.HasField("summary")
                         for item in record.summary.update}
        assert float(summary_items["summary/final_accuracy"]) == pytest.approx(summary(member)["final_accuracy"])


def test_tensorboard_serves_every_run_over_http(tracked_group):
    """`tensorboard --logdir` on 127.0.0.1 shows the finished runs' scalars; stopped by its own PID."""
    out, _, members, _, _ = tracked_group
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(out), "--host",
                               "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        accuracies = tensorboard_scalars(port, members[1].name, "accuracy/test")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [step for _, step, _ in accuracies] == [0, 1]
    assert accuracies[-1][2] == pytest.approx(summary(members[1])["final_accuracy"])


def test_a_whole_process_tracked_in_mlflow_and_wandb_stays_on_the_loopback_to_its_exit(tmp_path, tiny_folder):
    """As a script, with an audit hook on every socket call of the process (W&B and MLflow report
    usage from background threads and at exit, where the tests' own guard no longer is), and the
    home folder watched (matplotlib's cache set apart). W&B's service is a process of its own, which
    an audit hook cannot see: it runs offline, and its folders are checked instead."""
    guard, home, log = tmp_path / "guard", tmp_path / "home", tmp_path / "attempts.txt"
    guard.mkdir()
    home.mkdir()
    (guard / "sitecustomize.py").write_text("from tests.network_guard import install\ninstall()\n")
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "MLFLOW_"))}
    done = subprocess.run([sys.executable, str(REPO / "train_fastai.py"), *TINY, "--data", str(tiny_folder),
                           "--out", str(tmp_path / "runs"), *GIVEN_LRS, "--epochs", "1", "--track", "mlflow",
                           "--track", "wandb"], capture_output=True, text=True, timeout=300,
                          env={**environ, "HOME": str(home), LOG: str(log), "MPLCONFIGDIR": str(tmp_path / "mpl"),
                               "PYTHONPATH": os.pathsep.join([str(guard), str(REPO)])})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists() or log.read_text() == ""
    assert list(home.iterdir()) == []
    run_dir, = (tmp_path / "runs").glob("2*")
    assert (tmp_path / "runs" / "mlflow.db").is_file() and list((run_dir / "wandb").glob("offline-run-*"))


def test_a_tracker_that_fails_mid_run_is_one_warning_and_the_run_finishes(tmp_path, tiny_folder, monkeypatch, capsys):
    def disk_full(self, step, metrics):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trackers.TensorBoard, "epoch", disk_full)
    run_dir = train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", "1", "--name", "full")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: TensorBoard")]
    assert warnings == [f"warning: TensorBoard stopped tracking {run_dir.name} (OSError: [Errno 28] No space left on "
                        "device): the run goes on without it; its folder keeps everything"]
    assert (run_dir / "report.html").is_file() and (run_dir / "summary.json").is_file()


def test_the_trackers_are_pinned_as_the_requirements_pin_them():
    pins = {line.strip() for name in ("requirements.txt", "requirements-test.txt")
            for line in (REPO / name).read_text().splitlines()}
    assert {pin for install in [*INSTALL.values(), DATABASE_STORE] for pin in install.split()} <= pins
    assert re.search(r"tensorboard==\S+", (REPO / "requirements.txt").read_text())
