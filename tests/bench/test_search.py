"""bench/search.py on the CPU (--smoke): a group by one worker on one core against twice its trials
by two workers on two, and the gaps between a worker's trials. Its figures mean nothing: no speed
is asserted."""
import json
import os
import statistics

import pytest

from bench import search

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                     reason="the parallel case needs 2 cores (CI has 2)")


@needs_two_cores
def test_smoke_times_one_worker_against_two_on_twice_the_trials(tmp_path):
    out = tmp_path / "results"
    search.main(["--smoke", "--out", str(out)])
    results_file, = out.glob("*.json")
    assert results_file.stem.startswith("search-cpu-smoke-")
    results = json.loads(results_file.read_text())
    assert results["smoke"] is True and results["finished"] and results["versions"]["optuna"]
    assert results["workers"] == 2 and results["devices"] == "cores" and results["settings"] == search.SMOKE

    one, parallel = results["cases"]["one"], results["cases"]["parallel"]
    assert one["command"].endswith("--runs 2 --parallel 1") and parallel["command"].endswith("--runs 4 --parallel 2")
    assert (one["devices"], parallel["devices"]) == (1, 2)
    (one_run,), (parallel_run,) = one["runs"], parallel["runs"]
    assert (one_run["trials"], parallel_run["trials"]) == (2, 4)
    assert len(one_run["fit_s"]) == 2 and len(parallel_run["fit_s"]) == 4 and all(s > 0 for s in one_run["fit_s"])
    # One worker waits between its 2 trials once; each of two workers between its 2 trials once.
    assert len(one_run["gaps_s"]) == 1 and len(parallel_run["gaps_s"]) == 2
    gaps = one_run["gaps_s"] + parallel_run["gaps_s"]
    assert all(0 < gap < run["wall_s"] for run in (one_run, parallel_run) for gap in run["gaps_s"])
    assert results["ratio"] == pytest.approx(parallel_run["wall_s"] / one_run["wall_s"])
    for case, run in (("one", one_run), ("parallel", parallel_run)):
        assert 0 < run["to_first_fit_s"] < run["wall_s"] and 0 < run["after_last_trial_s"] < run["wall_s"]
        assert results["fixed_median_s"][case] == pytest.approx(run["to_first_fit_s"] + run["after_last_trial_s"])
    assert results["overhead_per_trial_s"] == {"median": statistics.median(gaps), "max": max(gaps), "count": 3}
    assert results["ratio_goal_met"] == (results["ratio"] <= search.RATIO_GOAL)

    log = results_file.with_suffix(".log").read_text()
    assert "[worker 1] training: " in log and "overhead per trial: median " in log
    assert str(tmp_path) not in log  # no path of this machine in a committed log


def test_a_gap_is_from_a_trial_s_end_to_the_next_trial_s_fit_in_the_same_worker():
    lines = [(1.0, "training: 2 epochs, ..."), (2.0, "[worker 0] training: 2 epochs"),
             (5.0, "[worker 0] final test accuracy 50.00% after 2 epochs, ..."),
             (5.5, "[worker 1] training: 2 epochs"),  # worker 1's first trial: no gap
             (5.75, "[worker 0] run folder: runs/x"), (6.0, "[worker 0] training: 2 epochs"),
             (9.0, "final test accuracy 40.00% after ..."), (9.25, "training: 2 epochs")]
    assert search.trial_gaps(lines) == [1.0, 0.25]


@needs_two_cores
def test_the_cpu_stand_in_runs_the_lone_worker_on_one_core_and_the_group_on_n(tmp_path):
    args = search.parse_args(["--smoke", "--out", str(tmp_path)])
    args.gpus = []
    cores = sorted(os.sched_getaffinity(0))
    assert search.placement(args, 1) == ({}, cores[:1]) and search.placement(args, 2) == ({}, cores[:2])
    args.gpus = ["3", "5"]
    assert search.placement(args, 1) == ({"CUDA_VISIBLE_DEVICES": "3"}, None)
    assert search.placement(args, 2) == ({"CUDA_VISIBLE_DEVICES": "3,5"}, None)
