"""The README's CPU try as a newcomer meets it: `python train_fastai.py` with CPU_TRY's flags, its
LR range test included, timed by phase as bench/latency.py times a run.

The first run starts from an empty data cache (a scratch CIFAR10_CACHE), as a newcomer's first
command does: the archive unpacked and its 60,000 images decoded, once. The runs after it find the
cache warm, as every later command does. README.md quotes both from the results file.

    python -m bench.first_hour                     # the README's command (minutes on 2 cores)
    python -m bench.first_hour --smoke --out DIR   # tiny data, to test the harness: its figures mean nothing

Results: bench/results/first-hour-<device>-<date>.json with the raw log (.log) beside it.
"""
import os
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

# The README's CPU try: a thin model on 5,000 training images for 3 epochs, every step of the recipe
# (the range test, the one-cycle fit, the figures and the report) in minutes on a CPU.
CPU_TRY = ["--subset", "5000", "--width", "8", "--bs", "128", "--epochs", "3"]
# Tiny data gives the range test no fall to read: the smoke run is given its LRs.
SMOKE_TRY = ["--width", "4", "--bs", "16", "--epochs", "1", "--lr-min", "1e-4", "--lr-max", "1e-3"]
SETTINGS = dict(warm_runs=2)
SMOKE = dict(warm_runs=1)
FIGURES = ("wall_s", "start_up_s", "before_fit_s", "range_test_s", "fit_s", "outputs_s")


def parse_args(argv=None):
    p = process_cli.parser(__doc__, SETTINGS, SMOKE)
    args = process_cli.parse(p, argv, SETTINGS, SMOKE)
    if args.warm_runs < 1:
        p.error(f"--warm-runs must be at least 1, not {args.warm_runs}")
    return args


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before torch loads (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import torch

from bench.bench import Tee, finish, results_stem
from bench.latency import record_head, time_run, tiny_cifar10
from bench.overhead import device_label
from cifar10_fast.core.errors import one_line_errors
from cifar10_fast.core.files import write_json


def report(results):
    cold, warm = results["cold_cache"], results["warm_cache_median"]
    print(f"\n{results['command_typed']}")
    print(f"first run (empty data cache): {cold['wall_s']:.1f} s, of which {cold['start_up_s']:.1f} s before its "
          f"run folder (the data set up), {cold['range_test_s']:.1f} s range test, {cold['fit_s']:.1f} s fit; "
          f"final test accuracy {100 * cold['final_accuracy']:.2f}%")
    print(f"later runs (warm cache), median: {warm['wall_s']:.1f} s, of which {warm['range_test_s']:.1f} s range test, "
          f"{warm['fit_s']:.1f} s fit")


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):  # an unwritable --out, too many results files: one line
        measure_and_record(args, argv)


def measure_and_record(args, argv):
    """The run on an empty cache, then on the warm cache; the results file rewritten after each."""
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu-smoke" if args.smoke else device_label(torch.device("cpu"))
    stem = results_stem(args.out, f"first hour {device}")
    data = args.data or os.environ.get("CIFAR10_DATA") or DATA
    flags = SMOKE_TRY if args.smoke else CPU_TRY
    results = {
        **record_head("first_hour", argv, args.smoke, device, data),
        "command_typed": shlex.join([".venv/bin/python", "train_fastai.py", *flags]),
        "seeds": {"run": 0}, "settings": {"warm_runs": args.warm_runs}, "cold_cache": None, "warm_cache": [],
    }

    def save():
        write_json(stem.with_suffix(".json"), results)

    with tempfile.TemporaryDirectory(prefix="first-hour-") as work, open(stem.with_suffix(".log"), "w") as log:
        placeholders = {work: "$SCRATCH", REPO: ".", args.out: "$OUT"}
        # A cache of its own: the first run finds it empty, as a newcomer's does; the user's is never touched.
        with redirect_stdout(Tee(sys.stdout, log, placeholders=placeholders)), \
                redirect_stderr(Tee(sys.stderr, log, placeholders=placeholders)), \
                mock.patch.dict(os.environ, {"CIFAR10_CACHE": str(Path(work) / "cache")}):
            if args.smoke:
                data = str(tiny_cifar10(Path(work) / "cifar10"))
            data = Path(data).expanduser().absolute()
            argv = [*flags, "--data", str(data) if args.smoke else os.path.relpath(data, REPO)]
            print(f"first-hour bench: {results['command']}\ndevice: {device}, {os.cpu_count()} cores, "
                  f"load average {results['load_average_at_start']}")
            for number in range(1 + args.warm_runs):
                print(f"\n{'cold' if number == 0 else 'warm'} cache: python train_fastai.py {shlex.join(argv)}")
                run = time_run(argv, Path(tempfile.mkdtemp(dir=work, prefix="runs-")))
                if number == 0:
                    results["cold_cache"] = run
                else:
                    results["warm_cache"].append(run)
                save()
            results["warm_cache_median"] = {figure: statistics.median(run[figure] for run in results["warm_cache"])
                                            for figure in FIGURES}
            results["load_average_at_end"] = os.getloadavg()
            finish(results, save, stem, report)


if __name__ == "__main__":
    startup.run(main)
