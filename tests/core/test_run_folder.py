"""The run folder's files by name, and the --out folder's index: every row kept, a new setting a new
column, concurrent runs losing none, a run one row, text in any script as it is; no other module
spells a file name."""
import ast
import json
import multiprocessing

import pandas as pd

from cifar10_fast.core import run_folder
from tests.conftest import REPO

RUN_FILE_NAMES = {value for name, value in vars(run_folder).items()
                  if name.isupper() and isinstance(value, str) and "." in value and " " not in value}


def test_no_other_module_spells_a_file_name_of_the_run_folder():
    spelled = []
    for path in [*REPO.glob("*.py"), *(REPO / "cifar10_fast").rglob("*.py")]:
        if path.name == "run_folder.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILE_NAMES:
                spelled.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
    assert spelled == []


def append_rows(out, first, count):
    for i in range(first, first + count):
        run_folder.append_to_index(out, out / f"run{i}", {"i": i}, {"final_accuracy": 0.5})


def test_index_keeps_every_row_adds_new_columns_and_survives_concurrent_runs(tmp_path):
    run_folder.append_to_index(tmp_path, tmp_path / "old", {"name": "007", "lr_max": 0.01}, {"final_accuracy": 0.9})
    run_folder.append_to_index(tmp_path, tmp_path / "new", {"name": "x", "lr_max": 0.02, "label_smoothing": 0.2},
                            {"final_accuracy": 0.95})
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    assert list(index.run) == ["old", "new"] and list(index.name) == ["007", "x"]  # earlier values as written
    assert list(index.label_smoothing) == ["", "0.2"]
    workers = [multiprocessing.get_context("fork").Process(target=append_rows, args=(tmp_path, 10 * w, 5))
               for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    index = pd.read_csv(tmp_path / "index.csv", dtype=str)
    assert len(index) == 22 and set(index.run[2:]) == {f"run{10 * w + i}" for w in range(4) for i in range(5)}


def test_a_run_has_one_row_however_often_it_finishes(tmp_path):
    """A resumed run stopped after its row was written, before it deleted its checkpoint: resumed
    again, it writes its row again, in place of the first."""
    run_folder.append_to_index(tmp_path, tmp_path / "a", {"seed": 0}, {"final_accuracy": 0.5})
    run_folder.append_to_index(tmp_path, tmp_path / "b", {"seed": 1}, {"final_accuracy": 0.6})
    run_folder.append_to_index(tmp_path, tmp_path / "a", {"seed": 0}, {"final_accuracy": 0.5})
    assert list(pd.read_csv(tmp_path / "index.csv").run) == ["b", "a"]


def test_index_writes_class_names_in_any_script_as_they_are(tmp_path):
    run_folder.append_to_index(tmp_path, tmp_path / "run", {"classes": ["猫", "犬", "chat"]}, {"final_accuracy": 0.5})
    text = (tmp_path / "index.csv").read_text(encoding="utf-8")
    assert '猫' in text and "\\u" not in text
    assert json.loads(pd.read_csv(tmp_path / "index.csv").classes[0]) == ["猫", "犬", "chat"]
