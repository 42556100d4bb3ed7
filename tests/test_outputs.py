import re

from conftest import REPO
from outputs import git_commit, new_run_dir


def test_run_folders_are_never_reused(tmp_path):
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()


def test_git_commit_is_none_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) is None
    commit = git_commit(REPO)
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
