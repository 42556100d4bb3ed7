"""--track and the checks of each tracker that refuse a run before torch loads: a tracker that is
not installed, an MLflow store or server that cannot work, a W&B mode that cannot."""
import json
import socket
import subprocess
import sys

import pytest

from cifar10_fast.core import trackers
from cifar10_fast.core.settings import parse_args
from cifar10_fast.core.trackers import mlflow_uri, tracking_problem, wandb_mode
from tests.conftest import REPO, free_port, one_line_error


def test_tensorboard_by_default_several_trackers_at_once_and_none_for_none():
    assert parse_args([]).track == ("tensorboard",)
    assert parse_args(["--track", "wandb", "--track", "mlflow", "--track", "wandb"]).track == ("wandb", "mlflow")
    assert parse_args(["--track", "none"]).track == ()


@pytest.mark.parametrize("argv,says", [
    (["--track", "none", "--track", "mlflow"], "--track none turns tracking off: give it alone, or drop it"),
    (["--track", "comet"], "invalid choice: 'comet'")])
def test_a_bad_track_flag_is_one_line(argv, says, capsys):
    assert says in one_line_error(parse_args, argv, capsys)


def test_a_tracker_that_is_not_installed_is_refused_with_its_install_command(monkeypatch, capsys):
    find_spec = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else find_spec(name))
    line = one_line_error(parse_args, ["--track", "wandb"], capsys)
    assert line == f"error: --track wandb: wandb is not installed: pip install {trackers.INSTALL['wandb']} (see --help)"
    assert parse_args(["--track", "wandb", "--find-lr"]).find_lr  # the range test alone tracks nothing


@pytest.mark.parametrize("uri,says", [
    ("file:///srv/mlruns", "is a folder, which MLflow 3 refuses as a store: use sqlite:///PATH/mlflow.db"),
    ("./mlruns", "is a folder, which MLflow 3 refuses as a store"),
    ("sqlite:////no/such/folder/mlflow.db", "/no/such/folder is not a folder: give a database file in an existing"),
    ("ftp://example.org", "has a scheme MLflow does not store runs in (ftp)"),
    (None, "cannot be reached within 3 s: start the server, or fix the URL; or unset MLFLOW_TRACKING_URI")])
def test_an_mlflow_tracking_uri_that_cannot_work_is_refused(uri, says, tmp_path):
    uri = uri or f"http://127.0.0.1:{free_port()}"
    problem = tracking_problem(("mlflow",), tmp_path, {"MLFLOW_TRACKING_URI": uri})
    assert problem.startswith(f"--track mlflow: MLFLOW_TRACKING_URI={uri}") and says in problem


def test_mlflow_keeps_a_database_per_out_folder_unless_a_server_is_given(tmp_path):
    assert mlflow_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_problem(("mlflow",), tmp_path / "new", {}) is None  # made with --out, by the run
    with socket.socket() as server:  # a server that answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert tracking_problem(("mlflow",), tmp_path, {"MLFLOW_TRACKING_URI": uri}) is None


def test_wandb_is_offline_unless_configured_and_online_needs_a_key(tmp_path):
    no_netrc = {"NETRC": str(tmp_path / "netrc")}
    assert wandb_mode({}) == "offline" and wandb_mode({"WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode({"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}) == "disabled"
    assert tracking_problem(("wandb",), tmp_path, no_netrc) is None
    assert "WANDB_MODE=fast is not a W&B mode" in tracking_problem(("wandb",), tmp_path, {"WANDB_MODE": "fast"})
    assert "no API key is set: run `wandb login` or set WANDB_API_KEY" in tracking_problem(
        ("wandb",), tmp_path, {**no_netrc, "WANDB_MODE": "online"})
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password key\n")
    assert tracking_problem(("wandb",), tmp_path, {**no_netrc, "WANDB_MODE": "online"}) is None


def test_the_checks_load_no_tracker_and_no_torch(tmp_path):
    """Refused before anything heavy loads: the check asks importlib whether each is installed."""
    probe = ("import sys\nfrom cifar10_fast.core.settings import parse_args\ntry:\n"
             f"    parse_args(['--track', 'mlflow', '--track', 'wandb', '--out', {str(tmp_path)!r}])\n"
             "except SystemExit as e:\n    print(e.code)\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'mlflow', 'wandb', 'tensorboard'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PATH": "", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    code, loaded = done.stdout.splitlines()
    assert code == "2" and json.loads(loaded) == [], done.stderr
    assert done.stderr.startswith("error: --track mlflow: MLFLOW_TRACKING_URI=http://127.0.0.1:")
