"""The settings of a run: the recipe's values, the flags that change them, presets, sweeps and
the settings a resumed run takes back from its folder.

Nothing here imports torch or fastai (seconds to load), so that `--help` and a bad flag answer
at once.
"""
import argparse
import itertools
import json
import math
import os
import re
import sys
from pathlib import Path

from cifar10_fast.core import lifecycle
from cifar10_fast.core.errors import BadInput

# The recipe (Myrtle's DAWNBench ResNet): the values a flag left unset takes. "seed" is the spec.
# "fast" departs from it for the shortest time to 94%, with the tricks of Myrtle's "How to train
# your ResNet" that keep the network and optimiser: fewer epochs, label smoothing 0.2, flip TTA.
RECIPE = dict(epochs=24, bs=512, wd=0.01, label_smoothing=0.0, tta=False)
PRESETS = {"seed": RECIPE, "fast": {**RECIPE, "epochs": 10, "label_smoothing": 0.2, "tta": True}}
PEAK_FRACTION = 5 / 24  # LRMAX at the end of epoch 5 of 24, and at the same fraction of any run
SWEEPABLE = dict(lr_max=float, lr_min=float, wd=float, epochs=int, peak_epoch=float, bs=int, width=int,
                 label_smoothing=float, subset=int, target_acc=float)
# What makes two runs the same run: a --resume must not change any of them.
RUN_SETTINGS = ("preset", "epochs", "peak_epoch", "bs", "lr_max", "lr_min", "wd", "label_smoothing", "seed", "aug",
                "subset", "width", "precision", "deterministic")
# What else a resumed run takes back from its config.json: it is still the same run, in its group.
RESUMED = (*RUN_SETTINGS, "name", "tta", "target_acc")
UNSET = object()
# The LR range test's sweep (lr_schedule.find_lr): here, where the --wd check reads its lowest LR.
FINDER_START_LR, FINDER_END_LR = 1e-7, 10
# The fewest range test iterations whose usable curve (lr_schedule.usable_curve drops the first
# tenth and the last 5 points) reaches 0.069, the LR of CIFAR-10's lowest smoothed loss in
# tests/data/lr_find_cifar10.csv: with fewer it ends while the loss still falls, and the LR rule
# fails, or puts LRMAX at the curve's end. tests/test_lr_schedule.py derives it from fastai's sweep.
FINDER_ITERS_MIN = 23
SEED_LIMIT = 2**63  # torch.manual_seed takes signed 64-bit numbers and wraps negative ones
NAME_LIMIT = 200  # bytes of --name: a run folder is <timestamp>-<name>[-<sweep point>-seed<N>][-group]
DEVICES = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # what the recipe runs on; torch also knows mps, xla, meta, ...
NO_GPU = "no CUDA GPU is visible here"


class UsageError(BadInput):
    """A bad flag or setting, worded as one line that says what to do."""


def user_path(text):
    """A path flag's value with a leading ~ as the home folder: the shell expands it only at the start
    of a word, so `--csv=~/p.csv` arrives as typed. (This file's own --out and --resume stay
    strings, as config.json records them: os.path.expanduser.)"""
    return Path(text).expanduser()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line instead of the 12-line usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None, description=None, reads_data=True):
    """The run's settings from `argv`, every check that needs no torch done (a bad one exits with
    its one line); `reads_data=False` for a caller that gives its own data (bench/overhead.py)."""
    p = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--find-lr", action="store_true",
                   help="run only the LR range test and write lr_find.csv/.png/.json")
    p.add_argument("--data", help="CIFAR-10 folder or .tgz (fastai layout or the python version); "
                                  "default: $CIFAR10_DATA, else fastai's download; with --resume, the data "
                                  "the run was run on")
    p.add_argument("--preset", choices=list(PRESETS), default="seed",
                   help="seed: the spec's recipe (default); fast: a departure for the shortest time to 94%% "
                        "(see the README); flags given explicitly override the preset")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's, 24 for seed)")
    p.add_argument("--peak-epoch", type=float,
                   help="the LR reaches LRMAX at the end of this epoch (default 5 of 24: 5/24 of the run)")
    p.add_argument("--bs", type=int, help="batch size (default: the preset's, 512)")
    p.add_argument("--lr-max", type=float, help="peak LR; default: found by the LR range test")
    p.add_argument("--lr-min", type=float, help="start and end LR; default: found by the LR range test")
    p.add_argument("--wd", type=float, help="decoupled weight decay of Adam (AdamW), not on BatchNorm or biases "
                                            "(default: the preset's, 0.01)")
    p.add_argument("--label-smoothing", type=float,
                   help="label smoothing of the cross-entropy (default: the preset's, 0 for seed, 0.2 for fast)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="also evaluate the final model with flip averaging (the image and its mirror) "
                        "(default: the preset's, off for seed, on for fast)")
    p.add_argument("--target-acc", type=float,
                   help="stop at the end of the epoch whose test accuracy reaches this fraction, e.g. 0.94")
    p.add_argument("--runs", type=int, default=1,
                   help="train this many seeds (--seed, --seed+1, ...) of each configuration (default 1)")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help=f"train every combination of these values (repeatable); KEY is one of {', '.join(SWEEPABLE)}")
    p.add_argument("--seed", type=int, default=0, help="seed for every random generator (default 0)")
    p.add_argument("--out", type=os.path.expanduser, default="runs", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="suffix for the run folder's name")
    p.add_argument("--aug", choices=["gpu", "albumentations"], default="gpu",
                   help="gpu: batch transforms on the data's device (default); "
                        "albumentations: per image on CPU DataLoader workers")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 mixed precision on a GPU that has it, fp16 on older GPUs, fp32 on CPU")
    p.add_argument("--subset", type=int, help="train on the first N training images (class-balanced), "
                                              "for quick runs; the test set stays whole")
    p.add_argument("--workers", type=int, help="DataLoader workers for --aug albumentations (default: all cores)")
    p.add_argument("--width", type=int, default=64,
                   help="channels of the first layer; 64 is the recipe, smaller is a thin copy for quick runs")
    p.add_argument("--finder-iters", type=int, default=100,
                   help="LR range test iterations (default 100, however short the run: it cycles the training "
                        "set as needed)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the first batches of the finder and of the first test pass "
                        "compile it); fastai's Learner still runs the loop")
    p.add_argument("--sync-debug", action="store_true",
                   help="on a GPU, stop with an error at any host-GPU synchronisation inside the training "
                        "batches (torch.cuda.set_sync_debug_mode): proof that nothing stalls the step")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels only (slower); a CPU run with a given --seed repeats anyway")
    p.add_argument("--resume", type=os.path.expanduser, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last finished epoch, with its settings")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    check_machine(p, args, reads_data)
    if not args.resume:  # a resumed run writes into its own folder
        check_out_folder(p, args.out)
    # Before --resume reads its folder: these modes make no single run to resume.
    if args.find_lr and (args.runs > 1 or args.sweep):
        p.error("--find-lr runs the LR range test once: drop --runs and --sweep")
    # Before the preset fills them in: `--preset fast --find-lr` is fine, its TTA is the preset's.
    evaluating = [flag for flag, given in (("--tta", args.tta), ("--target-acc", args.target_acc is not None)) if given]
    if args.find_lr and evaluating:
        p.error(f"--find-lr runs only the LR range test, which trains no model to evaluate: drop {evaluating[0]}")
    if args.resume and (args.runs > 1 or args.sweep):
        p.error("--resume continues one run: drop --runs and --sweep")
    if args.resume and args.find_lr:
        p.error("--find-lr and --resume do not go together: a finder run has nothing to resume")
    if args.resume:
        resume_settings(p, argv, args)
    else:
        # The data as given, beside the folder it resolves to; absolute, so that it holds from any folder.
        given = args.data or os.environ.get("CIFAR10_DATA")
        args.data_given = str(Path(given).expanduser().absolute()) if given else None
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        args.points = sweep_grid(args.sweep)
    except UsageError as e:
        p.error(str(e))
    for point in args.points:
        for problem in invalid_settings(member(args, point)):
            p.error(problem)
    return args


def check_training_flags(args, names):
    """The flags a bench shares with train_fastai.py (`names`, "data" among them if it reads the
    data), checked by train_fastai.py's own parser: a value it refuses (an LR of inf, a batch of 0)
    stops the bench with its one line before anything runs."""
    given = [(name, getattr(args, name)) for name in names if getattr(args, name) is not None]
    parse_args([text for name, value in given for text in (option(name), str(value))], reads_data="data" in names)


def not_a_folder(path):
    """What keeps `path` from being a folder: itself, or the nearest of its parents there is, where
    that is a file; None where it is a folder or can be made one."""
    existing = next(each for each in (path, *path.parents) if each.exists())
    return None if existing.is_dir() else existing


def check_out_folder(p, out):
    """Refuse, before any work, an --out that is a file or lies under one: its mkdir would fail only
    once the run (or the bench) had loaded torch and set its data up."""
    out = Path(out).expanduser()
    blocker = not_a_folder(out)
    if blocker == out:
        p.error(f"--out {out} is not a folder: give --out a folder for the results (a missing one is created)")
    if blocker:
        p.error(f"--out {out} lies under {blocker}, which is not a folder: give --out a folder for the results (a "
                "missing one is created)")


def check_machine(p, args, reads_data):
    """What can be refused before torch loads (seconds): a --device the recipe does not run on, a
    GPU or mixed precision on a machine that certainly has no GPU, a CIFAR10_CACHE that cannot be a
    folder, data that is not there."""
    if not DEVICES.fullmatch(args.device):
        p.error(f"--device {args.device} is not a device this tool trains on: use auto, cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and no_cuda_here():
        p.error(no_gpu(args.device))
    if args.precision in ("bf16", "fp16") and (args.device == "cpu" or no_cuda_here()):
        reason = "--device cpu trains on the CPU" if args.device == "cpu" else NO_GPU
        p.error(f"--precision {args.precision} needs a CUDA GPU (fastai's mixed precision), and {reason}: "
                "use --precision fp32, or auto")
    cache = os.environ.get("CIFAR10_CACHE")
    blocker = cache and not_a_folder(Path(cache).expanduser())
    if blocker:
        p.error(f"CIFAR10_CACHE={cache}: {blocker} is not a folder: set CIFAR10_CACHE to a folder (a missing one is "
                "created), or unset it for ~/.cache/cifar10-fast")
    data = args.data or (os.environ.get("CIFAR10_DATA") if reads_data and not args.resume else None)  # see resume_settings
    if data and not Path(data).expanduser().exists():
        given = f"--data {data}" if args.data else f"CIFAR10_DATA={data}"
        p.error(f"{given}: {Path(data).expanduser().absolute()} does not exist: give a CIFAR-10 folder or .tgz "
                "(fastai's layout or the python version)")


def no_gpu(device):
    """The line for a --device that names a GPU this machine lacks."""
    return f"--device {device}: {NO_GPU}; use --device cpu"


def no_cuda_here():
    """True where torch will certainly find no CUDA GPU, known without loading it: on Linux, no
    NVIDIA driver (/proc/driver/nvidia), no GPU device node (/dev/nvidia0 and on, WSL's /dev/dxg,
    ROCm's /dev/kfd, which torch.cuda also drives), or CUDA_VISIBLE_DEVICES="" hiding them all.
    Elsewhere only torch can tell: False, and hardware.resolve_device decides."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return True
    if not sys.platform.startswith("linux"):
        return False
    nodes = [Path("/proc/driver/nvidia"), Path("/dev/dxg"), Path("/dev/kfd"), *Path("/dev").glob("nvidia[0-9]*")]
    return not any(node.exists() for node in nodes)


def resume_settings(p, argv, args):
    """Take the run's settings from RUN_DIR/config.json; a flag given again must say the same."""
    run_dir = Path(args.resume)
    if not (run_dir / "checkpoint.json").is_file():
        p.error(lifecycle.nothing_to_resume(run_dir))
    saved = read_run_file(p, run_dir / "config.json")
    check_saved_values(p, run_dir / "config.json", saved)
    check_checkpoint(p, run_dir / "checkpoint.json", saved.get("epochs"))
    try:
        lifecycle.refuse_if_held(run_dir)
    except (BadInput, OSError) as e:
        p.error(str(e) if isinstance(e, BadInput) else f"{run_dir} cannot be resumed ({e.strerror}): a resumed run "
                "writes into its folder; make it writable")
    given = p.parse_args(argv, namespace=argparse.Namespace(**{key: UNSET for key in vars(args)}))
    for key in RESUMED:
        value = getattr(given, key)
        if value is not UNSET and value != saved.get(key):
            p.error(f"{run_dir} was run with {option(key)} {saved.get(key)}, not {value}: "
                    "drop the flag to resume it, or start a new run")
        setattr(args, key, saved.get(key, getattr(args, key)))  # a config from before a setting existed
    # The run folder's parent is its --out by construction, wherever --out was given from.
    if given.out is not UNSET and Path(given.out).resolve() != run_dir.parent.resolve():
        p.error(f"{run_dir} belongs to --out {run_dir.parent}, not {given.out}: drop --out to resume it")
    args.out, args.data_given = saved.get("out", args.out), saved.get("data_given")
    args.group, args.sweep_point = saved.get("group"), saved.get("sweep_point")  # a member of a group stays one
    if not args.data:  # the run's own data, which it compares by content; CIFAR10_DATA is a new run's default
        # The folder it resolved to or, where that is gone (a cache cleaned since), the data it was given.
        kept = [path for path in (saved.get("data"), args.data_given) if path and Path(path).exists()]
        if args.data_given and not kept:
            p.error(f"{run_dir} was run on {args.data_given}, which is not there any more (nor the folder it was "
                    "unpacked into): give --data with a copy of it to resume the run")
        args.data = kept[0] if kept else None  # None: fastai's download, as the run had it


def check_saved_values(p, config, saved):
    """Each setting a resumed run takes from config.json must be a value its flag could have given:
    a hand-edited file could hold anything."""
    for action in p._actions:
        value = saved.get(action.dest)
        if action.dest not in RESUMED or value is None:
            continue
        kind = bool if action.nargs == 0 else action.type or str  # nargs 0: store_true and --x/--no-x
        fits = type(value) in (int, float) if kind is float else type(value) is kind  # by hand, 1.0 may be 1
        if not fits or (action.choices and value not in action.choices):
            p.error(f"{config} holds {action.dest} = {value!r}, which {option(action.dest)} cannot give: the run "
                    "folder is damaged; start a new run")


def check_checkpoint(p, checkpoint, epochs):
    """The checkpoint must name a finished epoch of the run and hold what the resumed run joins up
    with (each earlier epoch's line, the LRs and betas it was trained with, its seconds): anything
    else would resume into a NaN summary or fail in the middle of the fit."""
    saved = read_run_file(p, checkpoint)
    done = saved.get("epochs_done")
    if type(done) is not int or not 1 <= done <= (epochs or 0):  # JSON's true would pass as an int
        p.error(f"{checkpoint} says {done!r} epochs are done, not a whole number from 1 to the run's {epochs}: "
                "the checkpoint is damaged; start a new run")
    history, seconds = saved.get("history"), saved.get("fit_seconds")
    if not (isinstance(history, list) and len(history) == done and all(isinstance(row, list) for row in history)
            and all(numbers(saved.get(key)) for key in ("lrs", "moms"))
            and type(seconds) in (int, float) and seconds >= 0):
        p.error(f"{checkpoint} lacks the lines, LRs or seconds of its {done} epochs: the checkpoint is damaged; "
                "start a new run")
    if not (type(saved.get("fit_done", False)) is bool and time_to_accuracy(saved.get("time_to_accuracy"))):
        p.error(f"{checkpoint} holds a fit_done or time_to_accuracy that a run cannot write: the checkpoint is "
                "damaged; start a new run")


def time_to_accuracy(state):
    """Whether `state` is absent or as callbacks.TimeToAccuracy.state() writes it: the milestones
    reached (as text) with their [epoch, seconds], and whether the fit stopped early."""
    if state is None:
        return True
    reached = state.get("reached") if isinstance(state, dict) else None
    return (isinstance(reached, dict) and type(state.get("stopped_early")) is bool
            and all(number_text(milestone) and numbers(when) and len(when) == 2 for milestone, when in reached.items()))


def number_text(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def numbers(values):
    return isinstance(values, list) and len(values) > 0 and all(type(v) in (int, float) for v in values)


def read_run_file(p, path):
    """A run folder's JSON object, or one line saying it cannot be read."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: not UTF-8 text, or not JSON
        p.error(f"{path} cannot be read ({type(e).__name__}): give the folder of an interrupted run")
    if not isinstance(content, dict):
        p.error(f"{path} holds no settings: give the folder of an interrupted run")
    return content


def wd_problem(wd, lr, lr_flag=None):
    """Why decoupled weight decay `wd` cannot train at the LR `lr` (given as `lr_flag`, or else the
    range test's lowest), where LR x wd is 1 or more. Each step scales every weight by 1 - LR x wd:
    from 1 on that zeroes the weights or flips their sign instead of shrinking them, and from 2 on
    they grow without bound, a divergence that would look like the LR's."""
    which = f"{lr_flag} {lr:g}" if lr_flag else f"the LR range test's lowest LR, {lr:g},"
    # A lower LR only where one would be an LR at all: not below the range test's lowest.
    lower_lr = f", or {lr_flag} below {1 / wd:g}" if lr_flag and 1 / wd > FINDER_START_LR else ""
    return (f"{which} with --wd {wd:g}: decoupled weight decay scales every weight by 1 - LR x wd a step, "
            f"{1 - lr * wd:.3g} here, which zeroes or flips the weights instead of decaying them; keep LR x wd below "
            f"1: --wd below {1 / lr:g}{lower_lr} (the recipe's wd is {RECIPE['wd']})")


def lr_source(lr_min, lr_max):
    """Where a run's LRs come from, as config.json records it, given the --lr-min and --lr-max
    values (None where not given): "flags" or "lr_find.json" for both, or each LR's own where the
    range test finds one of them."""
    sources = {name: "lr_find.json" if value is None else "flags" for name, value in (("lr_min", lr_min),
                                                                                    ("lr_max", lr_max))}
    if len(set(sources.values())) == 1:
        return sources["lr_min"]
    return ", ".join(f"{name}: {source}" for name, source in sources.items())


def option(name):
    """The flag of a setting: lr_max -> --lr-max."""
    return f"--{name.replace('_', '-')}"


def sweep_grid(sweeps):
    """Every combination of the --sweep KEY=V1,V2,... values, as [{key: value}]; [{}] without a sweep."""
    axes = {}
    for sweep in sweeps or []:
        key, _, values = sweep.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SWEEPABLE:
            raise UsageError(f"--sweep {sweep}: {key or '(no key)'} cannot be swept; use KEY=V1,V2,... with KEY one "
                             f"of {', '.join(SWEEPABLE)}")
        if key in axes:
            raise UsageError(f"--sweep {key} is given twice: give all its values in one --sweep {key}=V1,V2,...")
        try:
            axes[key] = [SWEEPABLE[key](value) for value in values.split(",")]
        except ValueError:
            raise UsageError(f"--sweep {sweep}: the values of {key} must be {SWEEPABLE[key].__name__} numbers, "
                             "separated by commas") from None
        repeated = next((value for i, value in enumerate(axes[key]) if value in axes[key][:i]), None)
        if repeated is not None:  # one point trained twice, and its spread reported as over seeds
            raise UsageError(f"--sweep {sweep} gives {key} {repeated:g} twice: give each value once (--runs N "
                             "trains N seeds of each point)")
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def member(args, point, seed=None, group=None):
    """The settings of one run: `args` with a sweep point's values and a seed."""
    settings = argparse.Namespace(**{**vars(args), **point})
    del settings.points  # the whole grid is the group's, not one run's setting
    settings.seed = args.seed if seed is None else seed
    if settings.peak_epoch is None:
        settings.peak_epoch = settings.epochs * PEAK_FRACTION
    # A resumed member of a group keeps its point and group (resume_settings reads them back).
    settings.sweep_point = ",".join(f"{key}={value:g}" for key, value in point.items()) or vars(args).get("sweep_point")
    settings.group = group or vars(args).get("group")
    if group:
        settings.name = "-".join(filter(None, [args.name, settings.sweep_point, f"seed{settings.seed}"]))
    return settings


def invalid_settings(args):
    not_finite = [f"{option(name)} must be a finite number, not {value}" for name, value in vars(args).items()
                  if isinstance(value, float) and not math.isfinite(value)]
    if not_finite:
        yield from not_finite
        return  # every check below compares with these values
    positive = dict(epochs=args.epochs, bs=args.bs, width=args.width, subset=args.subset,
                    lr_max=args.lr_max, lr_min=args.lr_min)
    for name, value in positive.items():
        if value is not None and not value > 0:
            yield f"{option(name)} must be positive, not {value}"
    if not 0 < args.peak_epoch <= args.epochs:
        yield f"--peak-epoch must lie in (0, --epochs={args.epochs}], not {args.peak_epoch}"
    if args.lr_min and args.lr_max and args.lr_min >= args.lr_max:
        yield f"--lr-min ({args.lr_min}) must be below --lr-max ({args.lr_max})"
    if args.wd < 0:
        yield f"--wd must not be negative, not {args.wd}"
    # Without --lr-max the range test runs with this wd, so the LRMAX it finds suits it; only its
    # lowest LR can already be too high for it.
    lr, lr_flag = (args.lr_max, "--lr-max") if args.lr_max else (FINDER_START_LR, None)
    if args.wd * lr >= 1:
        yield wd_problem(args.wd, lr, lr_flag)
    if not 0 <= args.label_smoothing < 1:
        yield f"--label-smoothing must lie in [0, 1), not {args.label_smoothing}"
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        yield f"--target-acc is a fraction in (0, 1], e.g. 0.94, not {args.target_acc}"
    if args.runs < 1:
        yield f"--runs must be positive, not {args.runs}"
    if args.workers is not None and args.workers < 0:
        yield f"--workers must not be negative, not {args.workers}"
    cores = os.cpu_count()
    if args.workers is not None and args.workers > cores:  # each worker is a process with a copy of the data
        yield f"--workers {args.workers} is more than the {cores} cores of this machine: give at most {cores}"
    if not 0 <= args.seed <= SEED_LIMIT - args.runs:
        yield f"--seed must lie in [0, {SEED_LIMIT - args.runs}] (torch's seeds are 64-bit), not {args.seed}"
    if args.name and (Path(args.name).name != args.name or args.name == ".."):
        yield f"--name {args.name} is not a plain folder name: drop the path separators and '..' (--out is the folder)"
    if args.name and len(args.name.encode()) > NAME_LIMIT:
        yield (f"--name is {len(args.name.encode())} bytes long: a folder name holds 255, the run's timestamp and "
               f"suffixes included; give at most {NAME_LIMIT}")
    if args.sync_debug and args.precision == "fp16":
        yield ("--sync-debug and --precision fp16 do not go together: fp16's gradient scaler reads the GPU at every "
               "step by design (to skip steps that overflow); use --precision bf16 or fp32")
    if args.finder_iters < FINDER_ITERS_MIN:
        yield (f"--finder-iters must be at least {FINDER_ITERS_MIN}, not {args.finder_iters}: fewer end the LR range "
               "test's usable curve before the LRs where CIFAR-10's loss is lowest (about 0.07)")
