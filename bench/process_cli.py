"""The command line of the benches that time whole `train_fastai.py` processes as a user waits for
them (latency.py, first_hour.py, search.py): --data, their integer settings, --smoke, --out and
--debug, checked before torch loads. Nothing here loads torch: --help and a bad flag answer at once.
"""
import argparse
from pathlib import Path

from cifar10_fast.core import settings

REPO = Path(__file__).resolve().parents[1]
DATA = "../shared/data/cifar10-jpeg.tgz"  # relative to the checkout, as the Makefile has it


def parser(description, defaults, smoke_defaults):
    """The parser of a bench whose integer settings are `defaults` (`smoke_defaults` under --smoke);
    the bench adds its own flags to it."""
    p = settings.OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=f"CIFAR-10 folder or .tgz (default $CIFAR10_DATA, else {DATA} from the checkout)")
    for name, default in defaults.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       help=f"default {default}; with --smoke {smoke_defaults[name]}")
    p.add_argument("--smoke", action="store_true", help="tiny data, to test the harness; its figures mean nothing")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; required with --smoke)")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    return p


def parse(p, argv, defaults, smoke_defaults):
    """`argv` parsed by `p` (from parser()): the settings not given take their defaults, a smoke run's
    results never go into bench/results, and --out can be made."""
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke needs --out DIR: smoke results are never written into bench/results")
    if args.smoke and args.data:
        p.error("--smoke makes its own tiny data: drop --data")
    for name, default in (smoke_defaults if args.smoke else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.out = args.out or REPO / "bench" / "results"
    settings.check_out_folder(p, args.out)
    return args
