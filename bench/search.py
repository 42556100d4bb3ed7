"""What a group's workers buy, and what Optuna costs a trial: `python train_fastai.py --runs ...
--parallel ...` timed as the user waits for it, in processes of their own.

Two cases, alternated for --repeats:
    one       M equal trials (`--runs M`, seeds of one point) by one worker on one device
    parallel  N x M equal trials (`--runs N*M --parallel N`) by N workers on N devices
The throughput figure is the ratio of their wall times: with no cost to sharing the study, N
workers on N devices train N times the trials in the time one trains M (issue 26: at most
RATIO_GOAL). On GPUs the devices are the first N visible GPUs (CUDA_VISIBLE_DEVICES); on a CPU,
the stand-in, they are cores: `one` runs on one core, `parallel` on N (the process's CPU
affinity, which each worker's share of threads follows), N = 2 by default.

Optuna's overhead per trial is the gap between a trial's last line ("final ... accuracy", its
outputs written) and the next trial's "training:" line in the same worker: the study told the
result, a new trial asked for, its run folder, data loaders and learner made (issue 26: under
OVERHEAD_GOAL_S on a journal file, the default store). Each run also records its fit seconds, and
the seconds before its first trial's fit and after its last trial (the workers' start and end: a
cost per group, not per trial, which longer trials make smaller in the ratio).

    python -m bench.search                     # the CPU stand-in (~10 minutes on 2 idle cores)
    python -m bench.search --smoke --out DIR   # tiny data, to test the harness: its figures mean nothing

One untimed run first fills the data cache (CIFAR10_CACHE, as the user's runs use it). Results:
bench/results/search-<device>-<date>.json with the raw log (.log) beside it.
"""
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

from bench import process_cli
from bench.process_cli import DATA, REPO
from cifar10_fast.core import startup
from cifar10_fast.core.groups import visible_gpus

SEED = 0
# Each trial on one core: a thin model, mostly its fit (about 10 s), as a trial on a GPU is.
CPU_TRIAL_FLAGS = ["--width", "8", "--subset", "2048", "--epochs", "2", "--bs", "512"]
GPU_TRIAL_FLAGS = []  # the recipe itself
SMOKE_TRIAL_FLAGS = ["--width", "4", "--epochs", "1", "--bs", "16"]
SETTINGS = dict(trials_per_worker=4, repeats=2, warmup=1)
SMOKE = dict(trials_per_worker=2, repeats=1, warmup=0)
RATIO_GOAL = 1.15
OVERHEAD_GOAL_S = 1.0
LINE = re.compile(r"^(?:\[worker (\d+)\] )?(.*)$")
TRIAL_END, FIT_START = re.compile(r"final (test|held-out) accuracy "), re.compile(r"training: ")


def parse_args(argv=None):
    p = process_cli.parser(__doc__, SETTINGS, SMOKE)
    p.add_argument("--workers", type=int, help="N: the visible GPUs where there are some, else 2 cores")
    args = process_cli.parse(p, argv, SETTINGS, SMOKE)
    if args.trials_per_worker < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--trials-per-worker and --repeats must be at least 1, --warmup at least 0")
    args.gpus = visible_gpus()
    units = len(args.gpus) if args.gpus else len(os.sched_getaffinity(0))
    args.workers = args.workers or (len(args.gpus) or 2)
    if not 2 <= args.workers <= units:
        p.error(f"--workers must be from 2 to the {units} {'GPUs' if args.gpus else 'cores'} this process may use")
    return args


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before torch loads (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import torch

from bench.bench import Tee, finish, results_stem
from bench.latency import GIVEN_LRS, record_head, stamped_lines, tiny_cifar10
from bench.overhead import device_label
from cifar10_fast.core.errors import one_line_errors
from cifar10_fast.core.files import write_json
from cifar10_fast.data.cache import cache_root


def placement(args, units):
    """The environment and CPU affinity of a case on its first `units` devices: GPUs named in
    CUDA_VISIBLE_DEVICES, or cores."""
    if args.gpus:
        return {"CUDA_VISIBLE_DEVICES": ",".join(args.gpus[:units])}, None
    cores = sorted(os.sched_getaffinity(0))[:units]
    return {}, cores


def trial_gaps(stamped):
    """Per worker, the seconds from each trial's last line to the next trial's "training:" line."""
    ended, gaps = {}, []
    for seconds, line in stamped:
        worker, text = LINE.match(line).groups()
        if TRIAL_END.match(text):
            ended[worker] = seconds
        elif FIT_START.match(text) and worker in ended:
            gaps.append(seconds - ended.pop(worker))
    return gaps


def time_group(argv, args, units, out):
    """One group command on `units` devices: its wall time, the gaps between its trials, and the
    fit seconds of its members."""
    environment, cores = placement(args, units)
    stamped = []
    for seconds, line in stamped_lines([*argv, "--out", str(out)], environment,
                                       preexec_fn=cores and (lambda: os.sched_setaffinity(0, cores))):
        stamped.append((seconds, line))
    wall, _ = stamped.pop()
    group, = out.glob("*-group")
    summary = json.loads((group / "summary.json").read_text())
    fits = [json.loads((out / name / "summary.json").read_text())["fit_seconds"] for name in summary["members"]]
    texts = [(seconds, LINE.match(line).group(2)) for seconds, line in stamped]
    first_fit = min(seconds for seconds, text in texts if FIT_START.match(text))
    last_end = max(seconds for seconds, text in texts if TRIAL_END.match(text))
    return {"wall_s": wall, "trials": summary["trials"]["complete"], "fit_s": fits, "gaps_s": trial_gaps(stamped),
            "to_first_fit_s": first_fit, "after_last_trial_s": wall - last_end}


def case_commands(args, base):
    trials = args.trials_per_worker
    return {"one": (1, [*base, "--runs", str(trials), "--parallel", "1"]),
            "parallel": (args.workers, [*base, "--runs", str(args.workers * trials), "--parallel", str(args.workers)])}


def run_cases(args, base, work, results, save):
    """The warm-up (a lone run that fills the data cache), then `one` and `parallel` in turn."""
    for number in range(args.warmup):
        print(f"\nwarm-up: python train_fastai.py {shlex.join(base)}")
        for _ in stamped_lines([*base, "--out", str(work / f"warmup-{number}")]):
            pass
    cases = case_commands(args, base)
    for repeat in range(args.repeats):
        for case, (units, argv) in cases.items():
            print(f"\n{case} (repeat {repeat + 1}): python train_fastai.py {shlex.join(argv)} on {units} "
                  f"{'GPU' if args.gpus else 'core'}{'s' if units > 1 else ''}")
            run = time_group(argv, args, units, Path(tempfile.mkdtemp(dir=work, prefix=f"{case}-")))
            results["cases"][case]["runs"].append(run)
            print(f"{case}: wall {run['wall_s']:.2f} s, {run['trials']} trials, gaps {run['gaps_s']}")
            save()
    summarize(results)


def summarize(results):
    """The medians of the wall times, their ratio, and the overhead per trial over every gap."""
    walls = {case: statistics.median(run["wall_s"] for run in case_results["runs"])
             for case, case_results in results["cases"].items()}
    gaps = [gap for case_results in results["cases"].values() for run in case_results["runs"] for gap in run["gaps_s"]]
    fixed = {case: statistics.median(run["to_first_fit_s"] + run["after_last_trial_s"] for run in case_results["runs"])
             for case, case_results in results["cases"].items()}
    results.update(wall_median_s=walls, fixed_median_s=fixed, ratio=walls["parallel"] / walls["one"],
                   overhead_per_trial_s={"median": statistics.median(gaps), "max": max(gaps), "count": len(gaps)})
    results["ratio_goal_met"] = results["ratio"] <= RATIO_GOAL
    results["overhead_goal_met"] = results["overhead_per_trial_s"]["median"] < OVERHEAD_GOAL_S


def report(results):
    walls, overhead = results["wall_median_s"], results["overhead_per_trial_s"]
    print(f"\nmedian wall time: one worker {walls['one']:.2f} s, {results['workers']} workers "
          f"{walls['parallel']:.2f} s; ratio {results['ratio']:.3f} (goal: at most {RATIO_GOAL}); "
          f"goal met: {results['ratio_goal_met']}")
    fixed = results["fixed_median_s"]
    print(f"of which before the first trial's fit and after the last trial: one worker {fixed['one']:.2f} s, "
          f"{results['workers']} workers {fixed['parallel']:.2f} s")
    print(f"overhead per trial: median {overhead['median']:.2f} s, max {overhead['max']:.2f} s over "
          f"{overhead['count']} gaps between trials (goal: median under {OVERHEAD_GOAL_S} s); "
          f"goal met: {results['overhead_goal_met']}")


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):  # an unwritable --out, too many results files: one line
        measure_and_record(args, argv)


def measure_and_record(args, argv):
    """The group commands, the results file rewritten after each, the raw log beside it."""
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu-smoke" if args.smoke else device_label(torch.device("cuda" if args.gpus else "cpu"))
    stem = results_stem(args.out, f"search {device}")
    data = args.data or os.environ.get("CIFAR10_DATA") or DATA
    results = {
        **record_head("search", argv, args.smoke, device, data),
        "devices": "GPUs" if args.gpus else "cores", "workers": args.workers, "storage": "journal file",
        "settings": {name: getattr(args, name) for name in SETTINGS}, "seeds": {"first_run": SEED},
        "ratio_goal": RATIO_GOAL, "overhead_goal_s": OVERHEAD_GOAL_S, "cases": {},
    }

    def save():
        write_json(stem.with_suffix(".json"), results)

    with tempfile.TemporaryDirectory(prefix="search-") as work, open(stem.with_suffix(".log"), "w") as log:
        placeholders = {work: "$SCRATCH", cache_root(): "$CIFAR10_CACHE", REPO: ".", args.out: "$OUT"}
        with redirect_stdout(Tee(sys.stdout, log, placeholders=placeholders)), \
                redirect_stderr(Tee(sys.stderr, log, placeholders=placeholders)), \
                mock.patch.dict(os.environ, {"CIFAR10_CACHE": str(Path(work) / "cache")} if args.smoke else {}):
            if args.smoke:  # tiny data, in a cache of its own: never the user's
                data = str(tiny_cifar10(Path(work) / "cifar10"))
            data = Path(data).expanduser().absolute()
            flags = SMOKE_TRIAL_FLAGS if args.smoke else GPU_TRIAL_FLAGS if args.gpus else CPU_TRIAL_FLAGS
            base = [*flags, *GIVEN_LRS, "--seed", str(SEED),
                    "--data", str(data) if args.smoke else os.path.relpath(data, REPO)]
            for case, (units, argv) in case_commands(args, base).items():
                results["cases"][case] = {"command": shlex.join(["python", "train_fastai.py", *argv]),
                                          "devices": units, "runs": []}
            print(f"search bench: {results['command']}\ndevice: {device}, {os.cpu_count()} cores, "
                  f"load average {results['load_average_at_start']}")
            save()
            run_cases(args, base, Path(work), results, save)
            results["load_average_at_end"] = os.getloadavg()
            finish(results, save, stem, report)


if __name__ == "__main__":
    startup.run(main)
