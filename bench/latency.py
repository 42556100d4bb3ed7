"""A whole run as the user waits for it: `python train_fastai.py ...` in a process of its own, its
phases timed from its own lines, against `python -c "import torch"` timed in the same moment.

Why: a rapid experiment is what the user waits for from the command to the result, not the fit
alone. On a GPU the recipe's fit is meant to take about 10 s; what surrounds it (Python and the
imports, the data set-up, the range test, the figures, export and report) must not double that.
The machine's load moves every figure, so the one to quote is the ratio of the run's fixed cost
(its wall time less its fit) to the time `import torch` takes just before and just after it.
Beside it, the ratio to `import torch` and a first `torch.optim` optimizer, which loads
torch._dynamo (its constructor and step call it): the floor of a run that trains with one (ours
steps with torch's functional fused AdamW and does not load it).

Each run's phases come from the moment each of its lines reaches this process (the run's output
is unbuffered) and from its summary.json:
    start_up    from the process's start to its "run folder:" line: Python, the imports, the data
                set-up on a warm cache, the learner
    before_fit  from there to its "training:" line: the config, the LR range test when it runs (on
                the code before issue 18, also the CPU estimate's own timing)
    range_test  from "LR range test: N iterations" to "LR range test: LRMIN ..." (a part of before_fit)
    fit         summary.json's fit_seconds: fit_one_cycle, its test passes included
    outputs     from the fit's end to the process's exit: figures, summary, weights, export, report,
                the index row, and the interpreter's exit
Where the run records its own phases (summary.json's `phases`), they are kept beside these.

    python -m bench.latency                    # the measured configuration (~5 minutes on 2 idle cores)
    python -m bench.latency --smoke --out DIR  # tiny data, to test the harness: its figures mean nothing

The cases: `given_lrs`, the configuration of issue 18 (`--width 4 --subset 1024 --epochs 1
--bs 512 --lr-min 1e-4 --lr-max 1e-3`), tracked in TensorBoard as every run is by default;
`untracked`, the same with `--track none`, right after it in each repeat, so that the two rows show
what the default tracking costs (issue 25: at most TRACKING_GOAL_S of fixed cost); and
`range_test`, the same run finding its LRs. One untimed run first fills the data cache
(CIFAR10_CACHE, as the user's runs use it) and warms the machine's file cache; then the runs
alternate with the two references. Results: bench/results/latency-<device>-<date>.json with the
raw log (.log) beside it.
"""
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

from bench import process_cli
from bench.process_cli import DATA, REPO
from cifar10_fast.core import startup

# Issue 18's measured configuration: a thin model, a whole pass over the 10,000 test images.
RUN_FLAGS = ["--width", "4", "--subset", "1024", "--epochs", "1", "--bs", "512"]
SMOKE_FLAGS = ["--width", "4", "--epochs", "1", "--bs", "16"]
GIVEN_LRS = ["--lr-min", "1e-4", "--lr-max", "1e-3"]
SEED = 0  # train_fastai.py's default --seed, given explicitly so the results file says it
SETTINGS = dict(repeats=5, range_test_repeats=3, warmup=1)
SMOKE = dict(repeats=1, range_test_repeats=0, warmup=0)
RATIO_GOAL = 2.0  # issue 18: the fixed cost at most twice `import torch`
TRACKING_GOAL_S = 0.3  # issue 25: the default tracking adds at most this to a run's fixed cost
PHASES = ("start_up", "before_fit", "range_test", "fit", "outputs")
# What each run is measured against, in processes of their own: issue 18's `import torch`, and
# that with a first torch.optim optimizer, which loads torch._dynamo (a run that trains with one pays it).
REFERENCES = {"torch_import_s": "import torch",
              "torch_optimizer_s": "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"}
FIGURES = (*REFERENCES, "wall_s", "fit_s", "fixed_s", "ratio", "ratio_with_optimizer",
           *(f"{phase}_s" for phase in PHASES))
# The run's lines that mark its phases: (name, the start of the line).
MARKS = {"run_folder": re.compile(r"run folder: "), "range_test_start": re.compile(r"LR range test: \d+ iterations"),
         "range_test_end": re.compile(r"LR range test: .*LRMIN = "), "training": re.compile(r"training: "),
         "final": re.compile(r"final test accuracy ")}


def parse_args(argv=None):
    p = process_cli.parser(__doc__, SETTINGS, SMOKE)
    args = process_cli.parse(p, argv, SETTINGS, SMOKE)
    if args.repeats < 1 or args.range_test_repeats < 0 or args.warmup < 0:
        p.error("--repeats must be at least 1, --range-test-repeats and --warmup at least 0")
    return args


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before torch loads (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import numpy as np
import torch
from PIL import Image

from bench.bench import Tee, finish, results_stem
from bench.overhead import device_label
from cifar10_fast.core.errors import one_line_errors
from cifar10_fast.core.files import write_json
from cifar10_fast.data.cache import cache_root
from cifar10_fast.training.hardware import library_versions
from cifar10_fast.training.outputs import git_commit


def tiny_cifar10(folder, per_class=(16, 4)):
    """Ten classes of flat colours with a little noise, in fastai's layout as PNG: learnable, so
    the range test finds a fall in its loss."""
    rng = np.random.default_rng(SEED)
    for split, n in zip(("train", "test"), per_class):
        for k in range(10):
            (folder / split / f"class{k}").mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(20 * k + 10 + rng.integers(-5, 6, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / split / f"class{k}" / f"{i:03d}.png")
    return folder


def time_references():
    """{figure: seconds} of each of REFERENCES, printed."""
    seconds = {}
    for figure, code in REFERENCES.items():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        seconds[figure] = time.perf_counter() - start
        print(f"{code}: {seconds[figure]:.2f} s")
    return seconds


def stamped_lines(argv, environment=None, **popen):
    """`python train_fastai.py argv` in a process of its own: each line it prints, with the seconds
    since its start at which it arrived, printed here as it comes; then its wall time (None as the
    line). Raises SystemExit where it fails."""
    env = {**os.environ, **(environment or {}), "PYTHONUNBUFFERED": "1"}  # each line as printed, as on a terminal
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "train_fastai.py", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen) as process:
        for line in process.stdout:
            seconds = time.perf_counter() - start
            print(f"  [{seconds:7.2f} s] {line.rstrip()}")
            yield seconds, line.rstrip("\n")
    if process.returncode != 0:
        raise SystemExit(f"error: the run failed (exit status {process.returncode}): see its lines above")
    yield time.perf_counter() - start, None


def time_run(argv, out):
    """One `python train_fastai.py` process, its lines stamped as they arrive; returns the
    figures of the run, or raises SystemExit with the run's last lines if it failed."""
    marks = {}
    for seconds, line in stamped_lines([*argv, "--out", str(out)]):
        for name, pattern in MARKS.items():
            if line is not None and name not in marks and pattern.match(line):
                marks[name] = seconds
    wall = seconds
    expected = {"run_folder", "training", "final"} | ({"range_test_end"} if "range_test_start" in marks else set())
    if expected - set(marks):
        raise SystemExit("error: the run did not print the lines that mark its phases: see its lines above")
    run_dir, = (path for path in out.iterdir() if path.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**figures(marks, wall, summary["fit_seconds"]), "run_phases": summary.get("phases"),
            "final_accuracy": summary["final_accuracy"]}


def figures(marks, wall, fit):
    """A run's seconds by phase, from the moments its lines arrived (`marks`), its wall time and
    its fit's seconds."""
    range_test = marks["range_test_end"] - marks["range_test_start"] if "range_test_end" in marks else 0.0
    phases = {"start_up": marks["run_folder"], "before_fit": marks["training"] - marks["run_folder"],
              "range_test": range_test, "fit": fit, "outputs": wall - marks["training"] - fit}
    return {"wall_s": wall, "fit_s": fit, "fixed_s": wall - fit, **{f"{k}_s": v for k, v in phases.items()}}


def medians(runs):
    timed = [run for run in runs if not run["warmup"]]
    return {figure: statistics.median(run[figure] for run in timed) for figure in FIGURES} if timed else None


def run_cases(args, flags, work, results, save):
    """The warm-up runs, then each repeat: the references, a run of each case, ..., the references;
    each run's reference figures are the means of those just before and just after it."""
    schedule = [("given_lrs", True)] * args.warmup + [
        (case, False) for repeat in range(args.repeats)
        for case in ("given_lrs", "untracked", "range_test")
        if case != "range_test" or repeat < args.range_test_repeats]
    before = None
    for number, (case, warmup) in enumerate(schedule):
        if before is None and not warmup:
            before = time_references()
        argv = flags[case]
        print(f"\n{case}{' (warm-up)' if warmup else ''}: python train_fastai.py {shlex.join(argv)}")
        run = {"case": case, "warmup": warmup, **time_run(argv, Path(tempfile.mkdtemp(dir=work, prefix="runs-")))}
        if not warmup:
            after = time_references()
            run.update({figure: (before[figure] + after[figure]) / 2 for figure in REFERENCES})
            run["ratio"] = run["fixed_s"] / run["torch_import_s"]
            run["ratio_with_optimizer"] = run["fixed_s"] / run["torch_optimizer_s"]
            before = after
        results["cases"][case]["runs"].append(run)
        print(f"{case}: {json.dumps({k: v for k, v in run.items() if k != 'run_phases'})}")
        for name, case_results in results["cases"].items():
            case_results["median"] = medians(case_results["runs"])
        save()
    given, untracked = (results["cases"][case]["median"] for case in ("given_lrs", "untracked"))
    results["goal_met"] = given["ratio"] <= RATIO_GOAL
    results["tracking_s"] = given["fixed_s"] - untracked["fixed_s"]
    results["tracking_goal_met"] = results["tracking_s"] <= TRACKING_GOAL_S


def report(results):
    print(f"\nmedians (s), the fixed cost over `import torch` in the same moment (goal: at most {RATIO_GOAL}):")
    names = [figure.removesuffix("_s") for figure in FIGURES]
    print(f"{'case':12}" + "".join(f"{name:>{len(name) + 2}}" for name in names))
    for case, case_results in results["cases"].items():
        if case_results["median"]:
            print(f"{case:12}" + "".join(f"{case_results['median'][figure]:{len(name) + 2}.2f}"
                                         for figure, name in zip(FIGURES, names)))
    print(f"goal met: {results['goal_met']}")
    print(f"the default tracking's fixed cost: {results['tracking_s']:.2f} s (goal: at most {TRACKING_GOAL_S} s); "
          f"goal met: {results['tracking_goal_met']}")


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):  # an unwritable --out, too many results files: one line
        measure_and_record(args, argv)


def record_head(bench, argv, smoke, device, data):
    """What the results file of a bench of whole processes begins with: its command as typed, when,
    the machine and its load, the versions and commit, and the data (none: a smoke run's own)."""
    return {"command": shlex.join(["python", "-m", f"bench.{bench}", *(sys.argv[1:] if argv is None else argv)]),
            "smoke": smoke, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device,
            "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(), "versions": library_versions(),
            "git_commit": git_commit(), "data": None if smoke else data}


def measure_and_record(args, argv):
    """The runs, the results file rewritten after each, the raw log beside it."""
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu-smoke" if args.smoke else device_label(torch.device("cpu"))
    stem = results_stem(args.out, f"latency {device}")
    data = args.data or os.environ.get("CIFAR10_DATA") or DATA
    results = {
        **record_head("latency", argv, args.smoke, device, data),
        "settings": {name: getattr(args, name) for name in SETTINGS}, "seeds": {"run": SEED},
        "ratio_goal": RATIO_GOAL, "goal_met": None, "tracking_goal_s": TRACKING_GOAL_S, "tracking_s": None,
        "tracking_goal_met": None, "cases": {},
    }

    def save():
        write_json(stem.with_suffix(".json"), results)

    with tempfile.TemporaryDirectory(prefix="latency-") as work, open(stem.with_suffix(".log"), "w") as log:
        # The raw log is committed: it names the scratch folder, the data cache, the checkout and the results
        # folder, not where they lie.
        placeholders = {work: "$SCRATCH", cache_root(): "$CIFAR10_CACHE", REPO: ".", args.out: "$OUT"}
        with redirect_stdout(Tee(sys.stdout, log, placeholders=placeholders)), \
                redirect_stderr(Tee(sys.stderr, log, placeholders=placeholders)), \
                mock.patch.dict(os.environ, {"CIFAR10_CACHE": str(Path(work) / "cache")} if args.smoke else {}):
            if args.smoke:  # tiny data, in a cache of its own: never the user's
                data = str(tiny_cifar10(Path(work) / "cifar10"))
            # The data as typed from the checkout, where the runs start (the tiny data by its scratch path).
            data = Path(data).expanduser().absolute()
            base = [*(SMOKE_FLAGS if args.smoke else RUN_FLAGS), "--seed", str(SEED),
                    "--data", str(data) if args.smoke else os.path.relpath(data, REPO)]
            flags = {"given_lrs": [*base, *GIVEN_LRS], "untracked": [*base, *GIVEN_LRS, "--track", "none"],
                     "range_test": base}
            for case, argv in flags.items():
                results["cases"][case] = {"command": shlex.join(["python", "train_fastai.py", *argv]), "runs": [],
                                          "median": None}
            print(f"latency bench: {results['command']}\ndevice: {device}, {os.cpu_count()} cores, "
                  f"load average {results['load_average_at_start']}")
            save()
            run_cases(args, flags, Path(work), results, save)
            results["load_average_at_end"] = os.getloadavg()
            finish(results, save, stem, report)


if __name__ == "__main__":
    startup.run(main)
