"""Every entry point starts the same way: its flags before the heavy imports, and whatever goes
wrong while those load (a stop, a missing backend, a warning made an error, a memory limit) is one
line, never a traceback."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GIVEN_LRS, REPO, TINY


def entry(script, *argv, cwd, env=None, limit_bytes=None):
    """`python script argv` as a user runs it, its exit status and what it printed on stderr."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    done = subprocess.run([sys.executable, str(REPO / script), *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300,
                          preexec_fn=limited if limit_bytes else None)
    return done.returncode, done.stderr


def stopped_while_loading(script, library, *argv, cwd, sent=signal.SIGINT):
    """`python script argv` sent `sent` once `library`'s shared objects are mapped: it is loading."""
    process = subprocess.Popen([sys.executable, str(REPO / script), *map(str, argv)], cwd=cwd, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    while library not in maps.read_text():
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(sent)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("script,library", [("predict.py", "libtorch"), ("compare.py", "pandas")])
def test_a_stop_while_predict_or_compare_loads_is_one_line(tmp_path, script, library, sent):
    """Ctrl-C printed a 70-line traceback; SIGTERM ended them silently with status 143."""
    (tmp_path / "image.png").write_bytes(b"not read before the libraries load")
    argv = ["image.png", "--run", "."] if script == "predict.py" else ["--out", "."]
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "classes.json").write_text("{}")
    status, err = stopped_while_loading(script, library, *argv, cwd=tmp_path, sent=sent)
    assert (status, err) == (130, "interrupted: nothing was written\n")


def test_a_stop_that_a_c_extension_turns_into_its_import_failure_is_still_one_line(tmp_path):
    """numpy's import, stopped inside its C part, raises "numpy._core.multiarray failed to import":
    CI printed that as a second line, exit status 2, under the stop's own line."""
    script = tmp_path / "entry.py"
    script.write_text(
        "import os, signal\n"
        "from cifar10_fast.core import startup\n"
        "startup.flags_first(__name__, lambda argv: None)\n"
        "try:  # as numpy's C import does with whatever its module's code raised\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "except SystemExit as stop:\n"
        "    raise ImportError('numpy._core.multiarray failed to import') from stop\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.returncode, done.stderr) == (130, "interrupted: nothing was written\n")


def test_a_notebooks_matplotlib_backend_is_not_needed_to_draw_into_files(tmp_path):
    """A Jupyter kernel exports MPLBACKEND to its `!python` cells: a backend the venv lacks failed
    every tool at import, though they draw with Agg."""
    status, err = entry("compare.py", "--out", tmp_path, cwd=tmp_path,
                        env={"MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    assert status == 2 and err.startswith("error: no runs to compare") and len(err.splitlines()) == 1


def test_a_warning_made_an_error_by_the_environment_is_one_line(tmp_path, tiny_folder):
    status, err = entry("train_fastai.py", "--data", tiny_folder, *TINY, *GIVEN_LRS, "--epochs", 1, cwd=tmp_path,
                        env={"PYTHONWARNINGS": "error"})
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "a library's warning, made an error by PYTHONWARNINGS (error)" in err


def test_libraries_that_cannot_load_under_a_memory_limit_are_one_line(tmp_path, tiny_folder):
    status, err = entry("train_fastai.py", "--data", tiny_folder, *TINY, cwd=tmp_path, limit_bytes=1500 * 2**20)
    assert status == 2 and err.startswith("error: the libraries could not be loaded (") and "ulimit -v" in err
    assert len(err.splitlines()) == 1, err
