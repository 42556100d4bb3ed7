"""errors.one_line_errors: bad input ends in one line; a programming error keeps its traceback."""
import errno
import os
import shlex
import shutil
import sys

import pytest

from cifar10_fast.core.errors import BadInput, command_to_retype, one_line_errors, shell_path, warn


def ended_with(error, capsys, debug=False):
    with pytest.raises(SystemExit) as e:
        with one_line_errors(debug):
            raise error
    assert e.value.code == 2
    return capsys.readouterr().err


def test_our_own_error_is_its_line(capsys):
    assert ended_with(BadInput("x is wrong: do y"), capsys) == "error: x is wrong: do y\n"


def test_a_file_system_error_names_the_path_and_how_to_see_the_traceback(capsys):
    line = ended_with(FileNotFoundError(2, "No such file or directory", "some/file.csv"), capsys)
    assert line.startswith("error: some/file.csv: No such file or directory: ")
    assert line.endswith("(rerun with --debug for the traceback)\n")


def test_text_that_is_not_utf8_names_the_text(capsys):
    line = ended_with(UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "invalid continuation byte"), capsys)
    assert "b'caf\\xe9': invalid continuation byte: use UTF-8" in line


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_a_programming_error_keeps_its_traceback(error):
    with pytest.raises(type(error)):
        with one_line_errors(debug=False):
            raise error


def test_debug_keeps_the_traceback():
    with pytest.raises(BadInput):
        with one_line_errors(debug=True):
            raise BadInput("x is wrong: do y")


def test_the_command_to_retype_is_the_one_the_user_ran_from_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    assert command_to_retype(tmp_path / "train_fastai.py") == ".venv/bin/python train_fastai.py"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a run started as ../.venv/bin/python ../train_fastai.py
    assert command_to_retype(tmp_path / "train_fastai.py") == (f"{tmp_path / '.venv' / 'bin' / 'python'} "
                                                                f"{tmp_path / 'train_fastai.py'}")  # not a bare python
    python3 = shutil.which("python3")
    monkeypatch.setattr(sys, "executable", python3)  # the one the PATH finds by its name: the name will do
    assert command_to_retype(tmp_path / "train_fastai.py") == f"python3 {tmp_path / 'train_fastai.py'}"


def test_a_path_starting_with_a_dash_is_not_taken_for_a_flag():
    """--out=-dash made a resume command whose run folder argparse read as an option."""
    assert shell_path("-dash/20260101-000000") == "./-dash/20260101-000000"
    assert shell_path("runs/my run") == "'runs/my run'" and shell_path("/abs/-x") == "/abs/-x"


def test_a_failure_of_the_machine_gets_the_fix_its_errno_calls_for(capsys):
    """A full disk, a read-only drive, a path that is not a folder (`--data /dev/null`): each its fix."""
    for number, path, fix in ((errno.ENOSPC, "runs/r/model.safetensors", "free disk space on its drive"),
                              (errno.EROFS, "runs/r", "its drive is read-only: choose a folder on a writable one"),
                              (errno.ENOTDIR, "/dev/null", "fix the path")):
        assert ended_with(OSError(number, os.strerror(number), path), capsys) == (
            f"error: {path}: {os.strerror(number)}: {fix} (rerun with --debug for the traceback)\n")


def test_what_was_kept_follows_the_fix(capsys):
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/r/export.pkl")
    error.add_note("then resume the run, which is saved: python train_fastai.py --resume runs/r")
    assert ended_with(error, capsys) == ("error: runs/r/export.pkl: No space left on device: free disk space on its "
                                         "drive; then resume the run, which is saved: python train_fastai.py --resume "
                                         "runs/r (rerun with --debug for the traceback)\n")


def test_the_command_to_retype_is_quoted_for_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my env" / "bin" / "python"))
    command = command_to_retype(tmp_path / "my code" / "train_fastai.py")
    assert shlex.split(command) == ["my env/bin/python", "my code/train_fastai.py"]


def test_a_line_about_a_users_names_reaches_the_terminal_escaped(capsys):
    """A path or name holding an escape sequence or a newline must not move the cursor or make two lines."""
    with pytest.raises(SystemExit):
        with one_line_errors(debug=False):
            raise BadInput("data/\x1b[2J\ncat is refused: fix it")
    warn("猫\x07 here")
    err = capsys.readouterr().err
    assert err == "error: data/\\x1b[2J\\x0acat is refused: fix it\nwarning: 猫\\x07 here\n"
