"""The flags of train_fastai.py, turned into its Config (config.py), and every check of them that
needs no torch: a bad flag, a device or precision this machine cannot have, an --out or a cache
folder that cannot be one, data that is not there, a run folder that cannot be resumed. A resumed
run takes its settings back from its config.json.

Nothing here imports torch or fastai (seconds to load), so that `--help` and a bad flag answer
at once.
"""
import argparse
import errno
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from cifar10_fast.core import lifecycle, run_folder
from cifar10_fast.core.config import (
    FIELDS,
    PRESETS,
    RECIPE,
    RESUMED,
    SWEEPABLE,
    UsageError,
    fits,
    invalid_settings,
    member,
    option,
    preset,
)
from cifar10_fast.core.errors import BadInput, printable
from cifar10_fast.core.groups import (
    DEFAULT_TRIALS,
    NOT_THE_GROUPS,
    absolute_storage,
    group_problems,
    is_group,
    search_space,
    setting_of,
    sweep_grid,
)
from cifar10_fast.core.trackers import NO_TRACKING, TRACKERS, tracking, tracking_problem

RECIPE_VALUES = {name: getattr(RECIPE, name) for name in FIELDS}
DEVICES = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # what the recipe runs on; torch also knows mps, xla, meta, ...
NO_GPU = "no CUDA GPU is visible here"
NO_HOME = ("HOME is set but empty, and CIFAR10_CACHE is not set: the cache (~/.cache/cifar10-fast) would go to "
           "/.cache; set HOME to your home folder, or CIFAR10_CACHE to a folder for the cache")


def user_path(text):
    """A path flag's value with a leading ~ as the home folder: the shell expands it only at the start
    of a word, so `--csv=~/p.csv` arrives as typed. (This file's own --out and --resume stay
    strings, as config.json records them: os.path.expanduser.)"""
    return Path(text).expanduser()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line instead of the 12-line usage block."""

    def error(self, message):
        self.exit(2, f"error: {printable(message)} (see --help)\n")


def flags_parser(description=None):
    """train_fastai.py's flags. None has a default here: a flag left out is left out of what the
    parser gives, and its value comes from the preset, or the Config's default (config.py)."""
    p = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                      argument_default=argparse.SUPPRESS)
    p.add_argument("--find-lr", action="store_true",
                   help="run only the LR range test and write lr_find.csv/.png/.json")
    p.add_argument("--data", help="CIFAR-10 folder or .tgz (fastai layout or the python version); "
                                  "default: $CIFAR10_DATA, else fastai's download; with --resume, the data "
                                  "the run was run on")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="seed: the spec's recipe (default); fast: a departure for the shortest time to 94%% "
                        "(see the README); flags given explicitly override the preset")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: the preset's, {RECIPE.epochs} for seed)")
    p.add_argument("--peak-epoch", type=float,
                   help="the LR reaches LRMAX at the end of this epoch (default 5 of 24: 5/24 of the run)")
    p.add_argument("--bs", type=int, help=f"batch size (default: the preset's, {RECIPE.bs})")
    p.add_argument("--lr-max", type=float, help="peak LR; default: found by the LR range test")
    p.add_argument("--lr-min", type=float, help="start and end LR; default: found by the LR range test")
    p.add_argument("--wd", type=float, help="decoupled weight decay of Adam (AdamW), not on BatchNorm or biases "
                                            f"(default: the preset's, {RECIPE.wd})")
    p.add_argument("--label-smoothing", type=float,
                   help="label smoothing of the cross-entropy (default: the preset's, "
                        f"{RECIPE.label_smoothing:g} for seed, {PRESETS['fast']['label_smoothing']:g} for fast)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="also evaluate the final model with flip averaging (the image and its mirror) "
                        "(default: the preset's, off for seed, on for fast)")
    p.add_argument("--target-acc", type=float,
                   help="stop at the end of the epoch whose test accuracy reaches this fraction, e.g. 0.94")
    p.add_argument("--runs", type=int,
                   help=f"train this many seeds (--seed, --seed+1, ...) of each configuration (default {RECIPE.runs})")
    p.add_argument("--sweep", action="append", type=str, metavar="KEY=V1,V2,...",
                   help=f"train every combination of these values (repeatable); KEY is one of {', '.join(SWEEPABLE)}")
    p.add_argument("--search", action="append", type=str, metavar="KEY=LOW:HIGH[:log]",
                   help="search these ranges (repeatable) with Optuna's TPE, each trial tested on --holdout training "
                        f"images, never the test set; KEY is one of {', '.join(SWEEPABLE)}")
    p.add_argument("--trials", type=int, help=f"a search's trials (default {DEFAULT_TRIALS})")
    p.add_argument("--prune", action="store_true",
                   help="stop a search's trial at an epoch where its held-out accuracy is below the median of the "
                        "other trials' at that epoch")
    p.add_argument("--holdout", type=int,
                   help="the training images a search's trials are tested on, class-balanced, the same for every "
                        "trial (default: a tenth of the training images)")
    p.add_argument("--final-runs", type=int,
                   help="seeds of the point a search finds best, trained on every training image and tested on the "
                        f"test set (default {RECIPE.final_runs})")
    p.add_argument("--parallel", type=int,
                   help="worker processes of a group, each on a GPU of its own (default: one per visible GPU, one on "
                        "a CPU)")
    p.add_argument("--storage", metavar="URL",
                   help="keep the group's study in this database, which the same command on other machines joins "
                        "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE); default: a journal file in the group folder")
    p.add_argument("--seed", type=int, help=f"seed for every random generator (default {RECIPE.seed})")
    p.add_argument("--out", type=os.path.expanduser, help=f"parent folder of run folders (default {RECIPE.out})")
    p.add_argument("--name", help="suffix for the run folder's name")
    p.add_argument("--aug", choices=FIELDS["aug"].metadata["choices"],
                   help="gpu: batch transforms on the data's device (default); "
                        "albumentations: per image on CPU DataLoader workers")
    p.add_argument("--device", help="auto (CUDA if present, else CPU; default), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=FIELDS["precision"].metadata["choices"],
                   help="auto (default): bf16 mixed precision on a GPU that has it, fp16 on older GPUs, fp32 on CPU")
    p.add_argument("--subset", type=int, help="train on the first N training images (class-balanced), "
                                              "for quick runs; the test set stays whole")
    p.add_argument("--workers", type=int, help="DataLoader workers for --aug albumentations (default: all cores)")
    p.add_argument("--width", type=int,
                   help=f"channels of the first layer; {RECIPE.width} (default) is the recipe, smaller is a thin copy "
                        "for quick runs")
    p.add_argument("--finder-iters", type=int,
                   help=f"LR range test iterations (default {RECIPE.finder_iters}, however short the run: it cycles "
                        "the training set as needed)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the first batches of the finder and of the first test pass "
                        "compile it); fastai's Learner still runs the loop")
    p.add_argument("--sync-debug", action="store_true",
                   help="on a GPU, stop with an error at any host-GPU synchronisation inside the training "
                        "batches (torch.cuda.set_sync_debug_mode): proof that nothing stalls the step")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels only (slower); a CPU run with a given --seed repeats anyway")
    p.add_argument("--track", action="append", choices=[*TRACKERS, NO_TRACKING],
                   help="where to watch the run as it trains, besides its folder (repeatable): tensorboard "
                        "(default), mlflow, wandb; none for nowhere else (the README's Watching runs)")
    p.add_argument("--resume", type=os.path.expanduser, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last finished epoch, with its settings")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    return p


def parse_args(argv=None, description=None, reads_data=True):
    """The run's Config from `argv`, every check that needs no torch done (a bad one exits with
    its one line); `reads_data=False` for a caller that gives its own data (bench/overhead.py)."""
    p = flags_parser(description)
    given = vars(p.parse_args(argv))
    for flag, what in (("resume", "the folder of an interrupted run"), ("out", "the folder for run folders"),
                       ("data", "a CIFAR-10 folder or .tgz")):
        if flag in given and not given[flag].strip():  # `--resume "$RUN"` with RUN unset, say
            p.error(f"{option(flag)} is empty (an unset shell variable?): give {what}")
    for flag in ("sweep", "search"):  # the dataclass holds tuples; argparse appends to lists
        if flag in given:
            given[flag] = tuple(given[flag])
    if "track" in given:
        try:
            given["track"] = tracking(given["track"])
        except ValueError as e:
            p.error(str(e))
    config = preset(given.pop("preset", RECIPE.preset), **given)
    if config.storage:
        config = replace(config, storage=absolute_storage(config.storage))
    check_machine(p, config, reads_data)
    if not config.resume:  # a resumed run writes into its own folder
        check_out_folder(p, config.out)
    # Before --resume reads its folder: these modes make no single run to resume.
    if config.find_lr and is_group(config):
        p.error("--find-lr runs the LR range test once: drop --runs, --sweep and --search")
    # As given, not as the preset has them: `--preset fast --find-lr` is fine, its TTA is the preset's.
    evaluating = [flag for flag, key in (("--tta", "tta"), ("--target-acc", "target_acc")) if given.get(key)]
    if config.find_lr and evaluating:
        p.error(f"--find-lr runs only the LR range test, which trains no model to evaluate: drop {evaluating[0]}")
    if config.resume and config.find_lr:
        p.error("--find-lr and --resume do not go together: a finder run has nothing to resume")
    if config.resume and run_folder.is_group_folder(config.resume):
        config = group_settings(p, config, given)
    elif config.resume and is_group(config):
        p.error("--resume continues one run, or a group from its group folder: drop --runs, --sweep and --search")
    elif config.resume:
        config = resumed_settings(p, config, given)
    else:
        # The data as given, beside the folder it resolves to; absolute, so that it holds from any folder.
        data = config.data or os.environ.get("CIFAR10_DATA")
        config = replace(config, data_given=str(Path(data).expanduser().absolute()) if data else None)
    try:
        points = sweep_grid(config.sweep) if not config.search else search_corners(search_space(config.search))
    except UsageError as e:
        p.error(str(e))
    for problem in [*group_problems(config), *flags_the_group_ignores(config, given)]:
        p.error(problem)
    for point in points:
        for problem in invalid_settings(member(config, point)):
            p.error(problem)
    problem = None if config.find_lr else tracking_problem(config.track, config.out)  # the range test is not tracked
    if problem:
        p.error(problem)
    return config


def flags_the_group_ignores(config, given):
    """Each flag given that nothing would use, as a line: a group's workers or study for a run
    alone, a search's final runs for a grid, a setting that the group's --sweep or --search sets
    for each run. config.json would record it as if used."""
    if not is_group(config):
        for flag, what in (("parallel", "a group's workers"), ("storage", "a group's study")):
            if flag in given:
                yield f"{option(flag)} goes with --runs, --sweep or --search ({what}): drop it"
    if "final_runs" in given and not config.search:
        yield "--final-runs goes with --search: drop it, or search"
    for flag, texts in (("--sweep", config.sweep), ("--search", config.search)):
        for text in texts:
            key = setting_of(text)
            if key in given:
                yield (f"{option(key)} {given[key]:g} and {flag} {text} both set {key}: drop {option(key)} (the group "
                       "gives each run its own)")


def search_corners(space):
    """The two points of a search space whose settings its checks need: every range's low end, and
    every range's high end."""
    return [{key: span.kind(getattr(span, end)) for key, span in space.items()} for end in ("low", "high")]


def group_settings(p, config, given):
    """The Config of the group in --resume GROUP_DIR, from its study.json: a flag that makes the group
    given again must say the same; those of where and how it runs (--parallel, --device, ...) apply."""
    group_dir = Path(config.resume)
    try:
        saved = run_folder.read_study(group_dir)["settings"]
    except (BadInput, KeyError, TypeError) as e:
        p.error(str(e) if isinstance(e, BadInput) else f"{group_dir / run_folder.STUDY} is damaged: start the group "
                "again")
    if not isinstance(saved, dict):
        p.error(f"{group_dir / run_folder.STUDY} is damaged: start the group again")
    damaged = next((key for key, value in saved.items() if key in FIELDS and key not in NOT_THE_GROUPS
                    and not recorded_fits(key, value)), None)
    if damaged:  # edited by hand, or someone else's: every check below would take it for a flag's value
        p.error(f"{group_dir / run_folder.STUDY} holds {damaged} = {saved[damaged]!r}, which {option(damaged)} cannot "
                "give: the group folder is damaged; start the group again")
    # As the dataclass holds them: config.json's lists are tuples, its absent sweep or search none.
    kept = {key: tuple(value or ()) if isinstance(RECIPE_VALUES.get(key), tuple) else value
            for key, value in saved.items() if key in FIELDS and key not in NOT_THE_GROUPS}
    for key, value in given.items():
        if key in kept and value != kept[key]:
            p.error(f"{group_dir} was run with {option(key)} {saved.get(key)}, not {value}: drop the flag to go on "
                    "with the group")
    # The group folder's parent is its --out by construction: its runs go there, whatever --out says.
    if "out" in given and Path(given["out"]).resolve() != group_dir.resolve().parent:
        p.error(f"{group_dir} belongs to --out {group_dir.resolve().parent}, not {given['out']}: drop --out to go on "
                "with the group")
    if "***" in (saved.get("storage") or "") and "storage" not in given:
        p.error(f"{group_dir}'s study is in {saved['storage']}: give --storage again (its password is never recorded)")
    # Without --storage, the study goes on where it was kept (a password's database was refused above).
    return replace(config, **kept, data=config.data or saved.get("data_given"), out=str(group_dir.resolve().parent),
                   storage=config.storage or saved.get("storage"))


def recorded_fits(key, value):
    """Whether `value` is one that record() writes for the setting `key`: a list of texts, or null
    for none, for the repeatable flags (--sweep, --search); else one the setting can hold."""
    if isinstance(RECIPE_VALUES.get(key), tuple):
        return value is None or (type(value) is list and all(isinstance(item, str) for item in value))
    return fits(key, value)


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
    if not cache and os.environ.get("HOME") == "":
        p.error(NO_HOME)
    blocker = cache and not_a_folder(Path(cache).expanduser())
    if blocker:
        p.error(f"CIFAR10_CACHE={cache}: {blocker} is not a folder: set CIFAR10_CACHE to a folder (a missing one is "
                "created), or unset it for ~/.cache/cifar10-fast")
    # A resumed run reads the data it was trained on (see resume_settings), not the variable's.
    data = args.data or (os.environ.get("CIFAR10_DATA") if reads_data and not args.resume else None)
    if not data:
        return
    given = f"--data {data}" if args.data else f"CIFAR10_DATA={data}"
    data = Path(data).expanduser().absolute()
    if not data.exists():
        what = "is a link that leads back to itself" if link_loop(data) else "does not exist"
        p.error(f"{given}: {data} {what}: give a CIFAR-10 folder or .tgz (fastai's layout or the python version)")
    out = Path(args.out).expanduser().resolve()
    if data.is_dir() and not args.resume and out.is_relative_to(data.resolve()):
        p.error(f"--out {args.out} lies inside the data, {given}: its run folders would be read as part of it (a "
                "class, or images) by the next run; give --out a folder outside the data")


def link_loop(path):
    """Whether `path` is a symbolic link that leads, through links, back to itself."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


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


def resumed_settings(p, config, given):
    """The Config of the run in --resume RUN_DIR, from its config.json; a flag given again must say
    the same, and the flags that do not make the run (--device, --workers, --debug, ...) apply."""
    run_dir = Path(config.resume)
    try:
        if not run_folder.has_checkpoint(run_dir):
            raise UsageError(lifecycle.nothing_to_resume(run_dir))
        saved = run_folder.read_config(run_dir)
        damaged = next((key for key in RESUMED if key in saved and not fits(key, saved[key])), None)
        if damaged:
            raise UsageError(f"{run_dir / run_folder.CONFIG} holds {damaged} = {saved[damaged]!r}, which "
                             f"{option(damaged)} cannot give: the run folder is damaged; start a new run")
        run_folder.read_checkpoint(run_dir, epochs=saved.get("epochs"))
        lifecycle.refuse_if_held(run_dir)
    except BadInput as e:
        p.error(str(e))
    except OSError as e:
        p.error(f"{run_dir} cannot be resumed ({e.strerror}): a resumed run writes into its folder; make it writable")
    for key in RESUMED:
        if key in given and given[key] != saved.get(key):
            p.error(f"{run_dir} was run with {option(key)} {saved.get(key)}, not {given[key]}: "
                    "drop the flag to resume it, or start a new run")
    # The run folder's parent is its --out by construction, wherever --out was given from.
    if "out" in given and Path(given["out"]).resolve() != run_dir.resolve().parent:
        p.error(f"{run_dir} belongs to --out {run_dir.resolve().parent}, not {given['out']}: drop --out to resume it")
    # Each setting as saved; one from before the setting existed, its default then (a run from before
    # the trackers was tracked nowhere). The trackers may be changed: they are views of the run.
    track = given["track"] if "track" in given else saved.get("track", [])
    if not fits("track", track):
        p.error(f"{run_dir / run_folder.CONFIG} holds track = {track!r}, which --track cannot give: the run folder is "
                "damaged; start a new run")
    config = replace(config, **{key: saved[key] for key in RESUMED if key in saved}, out=saved.get("out", config.out),
                     data_given=saved.get("data_given"), group=saved.get("group"), sweep_point=saved.get("sweep_point"),
                     track=tuple(track))
    if config.data:
        return config
    # The run's own data, which it compares by content; CIFAR10_DATA is a new run's default. The
    # folder it resolved to or, where that is gone (a cache cleaned since), the data it was given.
    kept = [path for path in (saved.get("data"), config.data_given) if path and Path(path).exists()]
    if config.data_given and not kept:
        p.error(f"{run_dir} was run on {config.data_given}, which is not there any more (nor the folder it was "
                "unpacked into): give --data with a copy of it to resume the run")
    return replace(config, data=kept[0] if kept else None)  # None: fastai's download, as the run had it


