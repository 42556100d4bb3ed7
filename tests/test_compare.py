import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

import compare
from cifar10_fast.experiments import comparison


def members(group):
    return [group.parent / name for name in json.loads((group / "summary.json").read_text())["members"]]


def test_sweep_with_runs_trains_every_seed_of_every_point_and_summarises_them(finished_sweep):
    out, group, printed = finished_sweep
    runs = members(group)
    assert [p.name.split("-", 2)[2] for p in runs] == ["lr-lr_max=0.001-seed5", "lr-lr_max=0.001-seed6",
                                                      "lr-lr_max=0.003-seed5", "lr-lr_max=0.003-seed6"]
    configs = [json.loads((p / "config.json").read_text()) for p in runs]
    assert [(c["lr_max"], c["seed"], c["sweep_point"], c["group"]) for c in configs] == [
        (lr, seed, f"lr_max={lr:g}", group.name) for lr in (1e-3, 3e-3) for seed in (5, 6)]
    points = json.loads((group / "summary.json").read_text())["points"]
    assert [(p["point"], p["runs"]) for p in points] == [("lr_max=0.001", 2), ("lr_max=0.003", 2)]
    for point, seeds in zip(points, (runs[:2], runs[2:])):
        summaries = [json.loads((p / "summary.json").read_text()) for p in seeds]
        accuracy = 100 * np.array([s["final_accuracy"] for s in summaries])
        fit_s = np.array([s["fit_seconds"] for s in summaries])
        assert point["final_accuracy_percent_mean"] == pytest.approx(accuracy.mean())
        assert point["final_accuracy_percent_std"] == pytest.approx(accuracy.std(ddof=1))
        assert (point["final_accuracy_percent_min"], point["final_accuracy_percent_max"]) == pytest.approx(
            (accuracy.min(), accuracy.max()))
        assert point["fit_seconds_mean"] == pytest.approx(fit_s.mean())
        assert point["fit_seconds_std"] == pytest.approx(fit_s.std(ddof=1))
        assert set(point) == {"group", "point", "runs", "tta_accuracy_percent_mean",
                              *(f"{name}_{s}" for name in ("final_accuracy_percent", "fit_seconds")
                                for s in ("mean", "std", "min", "max"))}
        assert (point["fit_seconds_min"], point["fit_seconds_max"]) == pytest.approx((fit_s.min(), fit_s.max()))
    assert "mean, std, min, max over seeds" in printed and "final % std" in printed and "fit s max" in printed
    assert Image.open(group / "compare.png").size[0] > 500


def test_every_finished_run_is_a_row_of_the_index(finished_sweep):
    out, group, _ = finished_sweep
    index = pd.read_csv(out / "index.csv")
    assert list(index.run) == [p.name for p in members(group)]
    for column in ("finished", "git_commit", "lr_max", "seed", "preset", "width", "final_accuracy", "tta_accuracy",
                   "fit_seconds", "first_epoch_90", "stopped_early"):
        assert column in index.columns, column
    assert list(index.lr_max) == [1e-3, 1e-3, 3e-3, 3e-3]
    summary = json.loads((members(group)[-1] / "summary.json").read_text())
    assert index.final_accuracy.iloc[-1] == pytest.approx(summary["final_accuracy"])


def test_compare_prints_runs_side_by_side_and_writes_the_figure(finished_sweep, tmp_path, capsys):
    out, group, _ = finished_sweep
    png = tmp_path / "compare.png"
    compare.main([str(group), "--png", str(png)])
    printed = capsys.readouterr().out
    for run in members(group):
        assert run.name in printed
    assert "lr_max" in printed and "final %" in printed and "mean, std, min, max over seeds" in printed
    assert Image.open(png).size[0] > 500
    with pytest.raises(SystemExit) as e:  # the figure is never overwritten
        compare.main([str(group), "--png", str(png)])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err

    compare.main(["--out", str(out), "--png", str(tmp_path / "all.png")])  # no folders: every run in the index
    printed = capsys.readouterr().out
    assert all(run.name in printed for run in members(group))

    without_tta = tmp_path / "without-tta"  # a run trained without --tta compares with the others
    shutil.copytree(members(group)[0], without_tta)
    summary = json.loads((without_tta / "summary.json").read_text())
    del summary["tta_accuracy"]
    (without_tta / "summary.json").write_text(json.dumps(summary))
    compare.main([str(group), str(without_tta), "--png", str(tmp_path / "mixed.png")])
    assert "without-tta" in capsys.readouterr().out


def test_compare_figure_draws_accuracy_and_lr_of_every_run(finished_sweep, monkeypatch, tmp_path):
    out, group, _ = finished_sweep
    runs = comparison.load_runs(members(group))
    drawn = []
    monkeypatch.setattr("matplotlib.pyplot.close", drawn.append)
    comparison.write_figure(runs, tmp_path / "figure.png")
    ax_acc, ax_lr = drawn[0].axes
    assert len(ax_acc.lines) == len(ax_lr.lines) == 4
    assert ax_acc.get_shared_x_axes().joined(ax_acc, ax_lr)
    history = pd.read_csv(members(group)[0] / "history.csv")
    assert list(ax_acc.lines[0].get_ydata()) == pytest.approx(list(100 * history.accuracy))


def compare_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        compare.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_compare_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert "no runs to compare" in compare_error(["--out", str(tmp_path / "runs")], capsys)
    assert "is not a folder" in compare_error([str(tmp_path / "missing")], capsys)
    (tmp_path / "notarun").mkdir()
    assert "is not a finished training run" in compare_error([str(tmp_path / "notarun")], capsys)


def copy_of_runs(finished_sweep, tmp_path):
    """The sweep's runs folder (its runs and index.csv), copied to be changed."""
    out, group, _ = finished_sweep
    return shutil.copytree(out, tmp_path / "runs"), [tmp_path / "runs" / run.name for run in members(group)]


def test_index_skips_a_run_that_did_not_finish_and_names_it(finished_sweep, tmp_path, capsys):
    out, runs = copy_of_runs(finished_sweep, tmp_path)
    (runs[0] / "report.html").unlink()  # crashed after its summary: the export failed, say
    compare.main(["--out", str(out), "--png", str(tmp_path / "figure.png")])
    printed = capsys.readouterr()
    assert f"warning: skipping {runs[0]}: it has no report.html" in printed.err
    assert runs[0].name not in printed.out and all(run.name in printed.out for run in runs[1:])


def test_the_default_figure_is_a_new_file_under_out_not_in_the_current_folder(finished_sweep, tmp_path, capsys,
                                                                              monkeypatch):
    out, _ = copy_of_runs(finished_sweep, tmp_path)
    monkeypatch.chdir(tmp_path)
    compare.main(["--out", str(out)])
    figure, = out.glob("compare-*.png")
    assert f"figure: {figure}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_a_run_given_twice_is_compared_once(finished_sweep, tmp_path, capsys):
    run = members(finished_sweep[1])[0]
    by_another_path = run.parent / ".." / run.parent.name / run.name
    compare.main([str(run), str(by_another_path), "--png", str(tmp_path / "figure.png")])
    printed = capsys.readouterr()
    assert printed.err == f"warning: {run} given more than once: each run is compared once\n"
    assert printed.out.count(run.name) == 1 and "over seeds" not in printed.out


def test_runs_on_other_data_show_it_among_the_settings_that_differ(finished_sweep, tmp_path, capsys):
    out, runs = copy_of_runs(finished_sweep, tmp_path)
    config = json.loads((runs[1] / "config.json").read_text())
    (runs[1] / "config.json").write_text(json.dumps({**config, "data_sha256": "f" * 64}))
    compare.main([str(runs[0]), str(runs[1]), "--png", str(tmp_path / "other-data.png")])
    printed = capsys.readouterr().out
    assert "data_sha256" in printed and config["data_sha256"][:12] in printed
    assert "f" * 12 in printed and "f" * 13 not in printed  # shortened, as git shortens a commit
    assert "classes" not in printed

    (runs[1] / "config.json").write_text(json.dumps({**config, "classes": [*config["classes"][:9], "zebra"]}))
    compare.main([str(runs[0]), str(runs[1]), "--png", str(tmp_path / "other-classes.png")])
    printed = capsys.readouterr().out
    assert "classes" in printed and "zebra" in printed and "data_sha256" not in printed


def test_a_group_that_did_not_finish_names_its_finished_runs(finished_sweep, tmp_path, capsys):
    """A sweep whose third run failed: the group has no summary.json, and its third and fourth
    runs are not finished."""
    out, runs = copy_of_runs(finished_sweep, tmp_path)
    group = out / finished_sweep[1].name
    (group / "summary.json").unlink()
    (runs[2] / "report.html").unlink()
    shutil.rmtree(runs[3])
    assert compare_error([str(group)], capsys) == (
        f"error: {group} is a group whose runs did not all finish (no summary.json): compare its finished runs "
        f"instead: {runs[0]} {runs[1]}")


# Issue 17: what is recorded is what happened; output a person can read ------------------------

def many_runs(count, points):
    """`count` runs as load_runs returns them, over `points` configurations (one group when
    several runs share them, as a sweep's seeds do)."""
    epochs = np.arange(4)
    return pd.DataFrame([{
        "run": f"20260101-120000-run{i}", "group": "sweep-group" if points < count else f"20260101-120000-run{i}",
        "point": f"lr_max={i % points + 1}e-3" if points < count else "",
        "history": pd.DataFrame({"epoch": epochs, "accuracy": 0.5 + 0.1 * epochs + 0.001 * i}),
        "schedule": pd.DataFrame({"epoch": epochs, "lr": 1e-3 * (i % points + 1) * np.ones(4)})}
        for i in range(count)])


def test_fifty_runs_each_get_a_colour_and_a_legend_inside_the_figure():
    fig = comparison.comparison_figure(many_runs(50, 50))
    fig.canvas.draw()
    ax_acc, ax_lr = fig.axes
    assert len({tuple(np.round(to_rgba(line.get_color()), 4)) for line in ax_acc.lines}) == 50
    legend, = fig.legends
    assert len(legend.get_texts()) == 50
    inside = fig.bbox
    box = legend.get_window_extent()
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    for ax in fig.axes:  # and off the axes
        assert not ax.get_window_extent().overlaps(box)
    plt.close(fig)


def test_many_seeds_of_a_few_points_are_drawn_as_each_points_mean_and_range():
    runs = many_runs(50, 5)
    fig = comparison.comparison_figure(runs)
    ax_acc, ax_lr = fig.axes
    assert len(ax_acc.lines) == 5 and len(ax_acc.collections) == 5 and len(ax_lr.lines) == 50
    first_point = pd.concat(list(runs.history[::5])).groupby("epoch").accuracy.mean()
    assert list(ax_acc.lines[0].get_ydata()) == pytest.approx(list(100 * first_point))
    assert [text.get_text() for text in fig.legends[0].get_texts()][0] == "lr_max=1e-3 (10 runs: mean, min-max)"
    plt.close(fig)


def test_class_names_from_someone_else_are_shown_whole_and_escaped(finished_sweep, tmp_path, capsys):
    """A class named "a,b" read as two of the classes joined by commas, and an escape sequence in a
    name reached the terminal raw."""
    out, runs = copy_of_runs(finished_sweep, tmp_path)
    config = json.loads((runs[1] / "config.json").read_text())
    (runs[1] / "config.json").write_text(json.dumps({**config, "classes": ["a,b", "\x1b[2J", *config["classes"][2:]]}))
    compare.main([str(runs[0]), str(runs[1]), "--png", str(tmp_path / "names.png")])
    printed = capsys.readouterr().out
    assert '["a,b", "\\u001b[2J", "bird"' in printed and "\x1b" not in printed  # JSON's escape


def test_two_runs_of_one_folder_name_in_two_places_are_two_configurations(finished_sweep, tmp_path, capsys):
    """Copies of one run in two --out folders were pooled as two seeds of one configuration."""
    _, group, _ = finished_sweep
    run = group.parent / json.loads((group / "summary.json").read_text())["members"][0]
    for place in ("a", "b"):
        copied = tmp_path / place / run.name
        shutil.copytree(run, copied)
        config = json.loads((copied / "config.json").read_text())
        (copied / "config.json").write_text(json.dumps({**config, "group": None, "sweep_point": None}))
    compare.main([str(tmp_path / "a" / run.name), str(tmp_path / "b" / run.name), "--png", str(tmp_path / "two.png")])
    assert "mean, std, min, max over seeds" not in capsys.readouterr().out  # no configuration has two runs


# hostile input, round 5: a group folder by another path -----------------------------------------

@pytest.mark.parametrize("given", ["link", "link/"])
def test_a_group_folder_given_through_a_link_is_its_members(finished_sweep, tmp_path, capsys, given):
    """`ln -s runs/<time>-lr-group best; compare.py best`: its members were looked for beside the link,
    and compare said the first of them was no finished run."""
    (tmp_path / "link").symlink_to(finished_sweep[1])
    compare.main([str(tmp_path / given), "--png", str(tmp_path / "figure.png")])
    printed = capsys.readouterr()
    assert printed.err == "" and all(run.name in printed.out for run in members(finished_sweep[1]))
