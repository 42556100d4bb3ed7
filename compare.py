"""Runs side by side: the runs index, and a table and a figure of the runs you choose.

    python compare.py [RUN_OR_GROUP_DIR ...] [--out runs] [--png FIGURE]

Without folders it compares every finished run listed in <out>/index.csv. A group folder (written by
`train_fastai.py --runs N` or `--sweep`) stands for its member runs. It prints one row per run
(the settings that differ between them, final and TTA accuracy, fit time, epochs to 90/93/94%)
and, where several runs share a configuration, their mean, std, min and max; the figure (by
default a new <out>/compare-<time>.png) shows test accuracy per epoch and the LR schedule of every
run on shared axes, a colour and a legend entry per configuration (past ten runs, each
configuration's mean and range over its seeds).
"""
import argparse
from pathlib import Path

from cifar10_fast.core import startup
from cifar10_fast.core.errors import one_line_errors, warn
from cifar10_fast.core.files import check_new_file, figures_to_files, unused_names
from cifar10_fast.core.run_folder import (
    CONFIG,
    INDEX,
    SUMMARY,
    missing_run_file,
    read_index,
    read_summary,
)
from cifar10_fast.core.settings import OneLineParser, user_path


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run or group folders (default: every run in the index)")
    p.add_argument("--out", type=user_path, default=Path("runs"), help="the folder holding index.csv (default runs)")
    p.add_argument("--png", type=user_path, help="the figure to write (.png, .pdf, .svg, ...); never overwritten "
                                            "(default: a new <out>/compare-<time>.png)")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    return p.parse_args(argv)


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before pandas and matplotlib load (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import re
from datetime import datetime

from matplotlib.backend_bases import FigureCanvasBase

from cifar10_fast.experiments.comparison import (
    RUN_FILE_FIX,
    CompareError,
    format_points,
    format_table,
    load_runs,
    points_table,
    runs_table,
    write_figure,
)

GROUP_NAME = re.compile(r"-group(-\d+)?$")  # train_fastai.py's name for a group folder, -2 and on if taken


def indexed_runs(out):
    """Every finished run in <out>/index.csv that is still there; one that is not finished is
    skipped with a warning."""
    index = out / INDEX
    if not index.is_file():
        raise CompareError(f"no runs to compare: {index} does not exist; train a run first or give run folders")
    runs = []
    for path in (out / name for name in read_index(index).run if name):
        if not path.is_dir():
            continue  # deleted since: the index keeps every row
        missing = missing_run_file(path)
        if missing:
            warn(f"skipping {path}: it has no {missing}, so the run did not finish")
        else:
            runs.append(path)
    if not runs:
        raise CompareError(f"no runs to compare: none of the runs in {index} is still in {out} and finished")
    return runs


def given_runs(given):
    """The given folders, with each group folder replaced by its members."""
    dirs = []
    for path in map(Path, given):
        if not path.is_dir():
            raise CompareError(f"{path} is not a folder: give run folders or group folders that train_fastai.py wrote")
        summary = path / SUMMARY
        if not summary.is_file() and not (path / CONFIG).exists() and GROUP_NAME.search(path.name):
            raise unfinished_group(path)
        members = read_summary(path, RUN_FILE_FIX).get("members") if summary.is_file() else None
        # A group's members lie beside its folder: the one a link to it leads to.
        dirs += [path.resolve().parent / name for name in members] if members else [path]
    return dirs


def unfinished_group(group):
    """The error for a group folder with no summary.json: a run of the group failed (a refused
    sweep point, say), so the group was never summarised. Names its runs that did finish."""
    problem = f"{group} is a group whose runs did not all finish (no summary.json)"
    finished = finished_members(group)
    if not finished:
        return CompareError(f"{problem}, and none of its runs is finished: train the group again")
    return CompareError(f"{problem}: compare its finished runs instead: {' '.join(map(str, finished))}")


def finished_members(group):
    """The finished runs of `group` that its folder's index.csv lists (a run joins it when it finishes)."""
    out = group.resolve().parent  # where the members are, for a group given through a link too
    index = out / INDEX
    if not index.is_file():
        return []
    table = read_index(index)
    names = table.run[table.group == group.resolve().name] if "group" in table.columns else []
    return [out / name for name in names if missing_run_file(out / name) is None]


def distinct_runs(dirs):
    """Each run once: a run given twice (by two paths, or alone and in its group) would count
    twice in the statistics. The repeated ones are named in a warning."""
    by_folder = {}
    for path in dirs:
        by_folder.setdefault(path.resolve(), []).append(path)
    repeated = [paths[0] for paths in by_folder.values() if len(paths) > 1]
    if repeated:
        warn(f"{', '.join(map(str, repeated))} given more than once: each run is compared once")
    return [paths[0] for paths in by_folder.values()]


def figure_path(png, out):
    """--png, or else a new <out>/compare-<time>.png: under runs/, which git ignores, by default."""
    if png is None:
        out.mkdir(parents=True, exist_ok=True)
        stem = f"compare-{datetime.now():%Y%m%d-%H%M%S}"
        png = next(out / f"{name}.png" for name in unused_names(stem) if not (out / f"{name}.png").exists())
    check_new_file(png, "--png")
    if png.suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
        raise CompareError(f"matplotlib cannot write a figure as {png.name}: give --png a name ending in .png, "
                           ".pdf or .svg")
    return png


def main(argv=None):
    args = parse_args(argv)
    figures_to_files()
    with one_line_errors(args.debug):
        runs = load_runs(distinct_runs(given_runs(args.runs) if args.runs else indexed_runs(args.out)))
        png = figure_path(args.png, args.out)
        print(format_table(runs_table(runs)))
        if runs.duplicated(["group", "point"]).any():
            print(format_points(points_table(runs)))
        write_figure(runs, png)
        print(f"figure: {png}")


if __name__ == "__main__":
    startup.run(main)
