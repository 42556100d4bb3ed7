"""errors.one_line_errors: bad input ends in one line; a programming error keeps its traceback."""
import sys

import pytest

from errors import BadInput, command_to_retype, one_line_errors


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
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a run started as python3 ../train_fastai.py
    assert command_to_retype(tmp_path / "train_fastai.py") == f"python3 {tmp_path / 'train_fastai.py'}"
