"""bench/first_hour.py on the CPU (--smoke): the README's CPU try timed by phase, first on an empty
data cache, then on the warm one. Its figures mean nothing: no speed is asserted."""
import json
import shlex
import statistics
from pathlib import Path

import pytest

from bench import first_hour

README = Path(__file__).resolve().parents[2] / "README.md"


def test_smoke_times_the_try_on_an_empty_cache_then_on_the_warm_one(tmp_path):
    out = tmp_path / "results"
    first_hour.main(["--smoke", "--out", str(out)])
    results_file, = out.glob("*.json")
    assert results_file.stem.startswith("first-hour-cpu-smoke-")
    results = json.loads(results_file.read_text())
    assert results["smoke"] is True and results["finished"] and results["versions"]["torch"]
    assert results["command_typed"] == shlex.join([".venv/bin/python", "train_fastai.py", *first_hour.SMOKE_TRY])
    cold, (warm,) = results["cold_cache"], results["warm_cache"]
    for run in (cold, warm):
        assert 0 < run["fit_s"] < run["wall_s"] and 0 <= run["final_accuracy"] <= 1
    assert results["warm_cache_median"] == {figure: statistics.median([warm[figure]]) for figure in first_hour.FIGURES}
    log = results_file.with_suffix(".log").read_text()
    assert "cold cache: python train_fastai.py" in log and "first run (empty data cache): " in log
    assert str(tmp_path) not in log


def test_the_readme_s_cpu_try_is_the_command_the_bench_times():
    assert shlex.join([".venv/bin/python", "train_fastai.py", *first_hour.CPU_TRY]) in README.read_text()


def test_a_bench_with_no_run_on_the_warm_cache_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        first_hour.parse_args(["--warm-runs", "0", "--out", str(tmp_path)])
    assert stopped.value.code == 2 and "--warm-runs must be at least 1, not 0" in capsys.readouterr().err
