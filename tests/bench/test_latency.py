"""bench/latency.py on the CPU (--smoke): a whole train_fastai.py process is timed by phase against
`import torch` (and torch's first optimizer), and the results file holds every figure BENCHMARKS.md
reads. Its figures mean nothing: no speed is asserted."""
import json
import statistics

import pytest

from bench import latency
from tests.conftest import one_line_error


def test_smoke_times_a_whole_run_by_phase_against_import_torch(tmp_path):
    out = tmp_path / "results"
    latency.main(["--smoke", "--out", str(out)])
    results_file, = out.glob("*.json")
    assert results_file.stem.startswith("latency-cpu-smoke-")
    results = json.loads(results_file.read_text())
    assert results["smoke"] is True and results["finished"] and results["git_commit"]
    assert results["versions"]["torch"] and results["cores"] >= 1 and results["seeds"] == {"run": 0}
    assert results["settings"] == latency.SMOKE and results["ratio_goal"] == latency.RATIO_GOAL

    given = results["cases"]["given_lrs"]
    assert given["command"].startswith("python train_fastai.py --width 4") and "--lr-max 1e-3" in given["command"]
    run, = given["runs"]
    assert run["case"] == "given_lrs" and not run["warmup"] and 0 <= run["final_accuracy"] <= 1
    assert 0 < run["fit_s"] < run["wall_s"] and 0 < run["torch_import_s"] and 0 < run["torch_optimizer_s"]
    assert run["fixed_s"] == pytest.approx(run["wall_s"] - run["fit_s"])
    assert run["ratio"] == pytest.approx(run["fixed_s"] / run["torch_import_s"])
    assert run["ratio_with_optimizer"] == pytest.approx(run["fixed_s"] / run["torch_optimizer_s"])
    assert run["range_test_s"] == 0 and run["start_up_s"] > 0 and run["outputs_s"] > 0
    assert run["start_up_s"] + run["before_fit_s"] + run["fit_s"] + run["outputs_s"] == pytest.approx(run["wall_s"])
    # The run's own account of its time fits in the time it was seen to take (a start read off
    # psutil on Linux was up to a second early: the boot time it adds has whole seconds).
    assert sum(run["run_phases"].values()) <= run["wall_s"] + 0.02
    assert given["median"] == {figure: statistics.median([run[figure]]) for figure in latency.FIGURES}
    assert results["goal_met"] == (run["ratio"] <= latency.RATIO_GOAL)
    # The same run with --track none, beside it: what the default tracking (TensorBoard) costs.
    untracked = results["cases"]["untracked"]
    assert untracked["command"] == given["command"] + " --track none"
    bare, = untracked["runs"]
    assert bare["case"] == "untracked" and 0 < bare["fit_s"] < bare["wall_s"]
    assert results["tracking_s"] == pytest.approx(run["fixed_s"] - bare["fixed_s"])
    assert results["tracking_goal_met"] == (results["tracking_s"] <= latency.TRACKING_GOAL_S) and \
        results["tracking_goal_s"] == latency.TRACKING_GOAL_S
    assert results["cases"]["range_test"] == {"command": given["command"].removesuffix(" --lr-min 1e-4 --lr-max 1e-3"),
                                              "runs": [], "median": None}

    log = results_file.with_suffix(".log").read_text()
    assert "import torch: " in log and "torch.optim.AdamW(" in log
    assert "final test accuracy" in log and "goal met: " in log
    assert "the default tracking's fixed cost: " in log
    assert str(tmp_path) not in log and "$SCRATCH/cifar10" in log  # no path of this machine in a committed log


def test_the_range_test_is_timed_between_its_own_lines():
    marks = {"run_folder": 3.0, "range_test_start": 3.5, "range_test_end": 6.0, "training": 6.25, "final": 11.5}
    assert latency.figures(marks, wall=12.0, fit=2.0) == {
        "wall_s": 12.0, "fit_s": 2.0, "fixed_s": 10.0, "start_up_s": 3.0, "before_fit_s": 3.25, "range_test_s": 2.5,
        "outputs_s": 3.75}


def test_smoke_needs_an_out_folder_and_makes_its_own_data(tmp_path, capsys):
    assert "never written into bench/results" in one_line_error(latency.main, ["--smoke"], capsys)
    assert "makes its own tiny data" in one_line_error(
        latency.main, ["--smoke", "--out", str(tmp_path), "--data", str(tmp_path)], capsys)
