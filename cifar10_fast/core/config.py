"""A run's settings: one frozen dataclass holding every setting with its default (the recipe's, as
Myrtle's DAWNBench ResNet ran it), the presets and sweep points that change some of them, and
what makes a set of settings one that can train.

settings.py turns the flags into a Config; config.json records `asdict(config)` with what the run
resolved; a resumed run takes its Config back from there. Nothing here loads torch.
"""
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from cifar10_fast.core.errors import CONTROL, BadInput, printable
from cifar10_fast.core.run_folder import LR_FIND_JSON
from cifar10_fast.core.trackers import TRACKERS

PEAK_FRACTION = 5 / 24  # LRMAX at the end of epoch 5 of 24, and at the same fraction of any run
# The LR range test's sweep (lr_schedule.find_lr): here, where the --wd check reads its lowest LR.
FINDER_START_LR, FINDER_END_LR = 1e-7, 10
LRMAX_DIVISOR = 10  # the LR rule's LRMAX: the LR of the range test's lowest loss, a decade lower
# The fewest range test iterations whose usable curve (lr_schedule.usable_curve drops the first
# tenth and the last 5 points) reaches 0.069, the LR of CIFAR-10's lowest smoothed loss in
# tests/data/lr_find_cifar10.csv: with fewer it ends while the loss still falls, and the LR rule
# fails, or puts LRMAX at the curve's end. tests/training/test_lr_schedule.py derives it from fastai's sweep.
FINDER_ITERS_MIN = 23
SEED_LIMIT = 2**63  # torch.manual_seed takes signed 64-bit numbers and wraps negative ones
RUNS_LIMIT = 10_000  # seeds of a point: far more than any comparison needs (each is a whole training)
NAME_LIMIT = 200  # bytes of --name: a run folder is <timestamp>-<name>[-<sweep point>-seed<N>][-group]


class UsageError(BadInput):
    """A bad flag or setting, worded as one line that says what to do."""


def setting(default, *, identity=False, resumed=False, sweep=False, choices=None):
    """A field of Config. `identity`: what makes two runs the same run, which a --resume must not
    change; `resumed`: taken back by a resumed run all the same (it is still the same run, in its
    group); `sweep`: a --sweep KEY; `choices`: the values it takes."""
    return field(default=default, metadata=dict(identity=identity, resumed=resumed or identity, sweep=sweep,
                                                choices=choices))


@dataclass(frozen=True)
class Config:
    # The recipe.
    epochs: int = setting(24, identity=True, sweep=True)
    peak_epoch: Optional[float] = setting(None, identity=True, sweep=True)  # None: PEAK_FRACTION of the epochs
    bs: int = setting(512, identity=True, sweep=True)
    lr_max: Optional[float] = setting(None, identity=True, sweep=True)  # None: found by the LR range test
    lr_min: Optional[float] = setting(None, identity=True, sweep=True)
    wd: float = setting(0.01, identity=True, sweep=True)  # decoupled, not on BatchNorm or biases
    label_smoothing: float = setting(0.0, identity=True, sweep=True)
    aug: str = setting("gpu", identity=True, choices=("gpu", "albumentations"))
    width: int = setting(64, identity=True, sweep=True)  # 64 is the recipe; less, a thin copy
    preset: str = setting("seed", identity=True, choices=("seed", "fast"))
    # Evaluating and stopping.
    tta: bool = setting(False, resumed=True)
    target_acc: Optional[float] = setting(None, resumed=True, sweep=True)
    # The run: data, seed, machine.
    data: Optional[str] = None  # None: $CIFAR10_DATA, else fastai's download
    subset: Optional[int] = setting(None, identity=True, sweep=True)
    seed: int = setting(0, identity=True)
    device: str = "auto"
    precision: str = setting("auto", identity=True, choices=("auto", "fp32", "bf16", "fp16"))
    deterministic: bool = setting(False, identity=True)
    workers: Optional[int] = None  # None: every core
    compile: bool = False
    sync_debug: bool = False
    finder_iters: int = 100
    find_lr: bool = False
    # Where it goes.
    out: str = "runs"
    name: Optional[str] = setting(None, resumed=True)
    resume: Optional[str] = None
    debug: bool = False
    # Groups (core/groups.py): seeds of each point of a grid, or a search; the trials of one Optuna
    # study, run by --parallel worker processes, kept in --storage (default: the group folder).
    runs: int = 1
    sweep: tuple = ()
    search: tuple = ()  # KEY=LOW:HIGH[:log] each
    trials: Optional[int] = None  # a search's (default 20)
    prune: bool = False
    holdout: Optional[int] = setting(None, identity=True)  # training images a search trial is tested on
    final_runs: int = 3  # seeds of the point a search finds best, tested on the test set
    parallel: Optional[int] = None  # default: one per visible GPU, one on a CPU
    storage: Optional[str] = None
    # Where the run is watched as it trains (core/trackers.py); () for nowhere but its folder.
    track: tuple = setting(("tensorboard",), choices=TRACKERS)
    # Resolved as the run starts, recorded, and taken back by a resumed run.
    data_given: Optional[str] = None  # --data or $CIFAR10_DATA as given, made absolute
    group: Optional[str] = None  # the group folder of a member run
    sweep_point: Optional[str] = None  # its point, as KEY=VALUE,...


RECIPE = Config()
# "seed" is the spec's recipe; "fast" departs from it for the shortest time to 94%, with the
# tricks of Myrtle's "How to train your ResNet" that keep the network and optimiser: fewer epochs,
# label smoothing 0.2, flip TTA.
PRESETS = {"seed": {}, "fast": dict(epochs=10, label_smoothing=0.2, tta=True)}
FIELDS = {f.name: f for f in fields(Config)}
TYPES = typing.get_type_hints(Config)
RUN_SETTINGS = tuple(name for name, f in FIELDS.items() if f.metadata.get("identity"))
RESUMED = tuple(name for name, f in FIELDS.items() if f.metadata.get("resumed"))
SWEEPABLE = {name: typing.get_args(TYPES[name])[0] if typing.get_args(TYPES[name]) else TYPES[name]
             for name, f in FIELDS.items() if f.metadata.get("sweep")}


def preset(name, /, **given):
    """The Config of preset `name` with the `given` settings over it."""
    return replace(RECIPE, **{**PRESETS[name], **given}, preset=name)


def record(config):
    """The settings as config.json records them."""
    return {**asdict(config), "sweep": list(config.sweep) or None, "search": list(config.search) or None,
            "track": list(config.track), "storage": config.storage and redacted(config.storage)}


def departures(recorded):
    """The flags, as a user types them, by which the settings config.json records (`recorded`) depart
    from the recipe's: what makes a run other than the recipe, at a glance. A peak epoch at the
    recipe's fraction of the run is the recipe's, as is any seed."""
    flags = []
    for name in RESUMED:
        value, recipe = recorded.get(name), getattr(RECIPE, name)
        at_the_recipes_peak = name == "peak_epoch" and value == recorded.get("epochs", 0) * PEAK_FRACTION
        # The precision "auto" resolves to, on the device the run had (config.json records it resolved).
        autos = {"auto", "fp32"} if recorded.get("device", "cpu").startswith("cpu") else {"auto", "bf16", "fp16"}
        automatic_precision = name == "precision" and value in autos
        if name in ("name", "seed") or value == recipe or at_the_recipes_peak or automatic_precision:
            continue
        if isinstance(value, bool):
            flags.append(option(name) if value else f"--no-{option(name)[2:]}")
        else:
            flags.append(f"{option(name)} {value:g}" if isinstance(value, float) else f"{option(name)} {value}")
    return flags


# A database URL's user and password as SQLAlchemy, which opens --storage, reads them: the password
# runs to the first @, whatever it holds; a URL parser (urlsplit) ends it at a / ? or # too.
DATABASE_USER_INFO = re.compile(r"^[\w+.-]+://(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@")


def database_password(url):
    """The password of the database URL `url` as the database is given it, or None."""
    found = DATABASE_USER_INFO.match(url)
    return found and found["password"]


def password_read_otherwise(url):
    """Whether the database and a URL parser read the password of `url` differently: it holds an @,
    /, ? or #, unencoded."""
    return database_password(url) != urlsplit(url).password


def redacted(url):
    """`url` with its password as ***: what any file, log line or message says of a --storage. One
    that the database and a URL parser read differently loses all either could take for it: all
    from the user's colon up to the URL's last @."""
    if password_read_otherwise(url):
        scheme, _, rest = url.partition("://")
        user_info, _, host = rest.rpartition("@")
        return f"{scheme}://{user_info.partition(':')[0]}:***@{host}"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"))


def option(name):
    """The flag of a setting: lr_max -> --lr-max."""
    return f"--{name.replace('_', '-')}"


def fits(name, value):
    """Whether `value` is one the setting `name` can hold (a hand-edited config.json could hold
    anything): its field's type, None where the field is optional, one of its choices."""
    kind = TYPES[name]
    if value is None:
        return type(None) in typing.get_args(kind)
    kind = next((k for k in typing.get_args(kind) if k is not type(None)), kind)
    choices = FIELDS[name].metadata.get("choices")
    if kind is tuple:  # a list in JSON, or a tuple as given; each item one of the choices
        return type(value) in (list, tuple) and all(not choices or item in choices for item in value)
    right_type = type(value) in (int, float) if kind is float else type(value) is kind  # by hand, 1.0 may be 1
    return right_type and (not choices or value in choices)


def member(config, point, seed=None, group=None):
    """The settings of one run: `config` with a sweep point's values, a seed, and the peak epoch
    its epochs give where none was set. A resumed member of a group keeps its point and group."""
    epochs = point.get("epochs", config.epochs)
    peak_epoch = point.get("peak_epoch", config.peak_epoch)
    peak_epoch = epochs * PEAK_FRACTION if peak_epoch is None else peak_epoch
    sweep_point = ",".join(f"{key}={value:g}" for key, value in point.items()) or config.sweep_point
    seed = config.seed if seed is None else seed
    name = "-".join(filter(None, [config.name, sweep_point, f"seed{seed}"])) if group else config.name
    return replace(config, **point, peak_epoch=peak_epoch, seed=seed, sweep_point=sweep_point,
                   group=group or config.group, name=name)


def lr_source(lr_min, lr_max):
    """Where a run's LRs come from, as config.json records it, given the --lr-min and --lr-max
    values (None where not given): "flags" or "lr_find.json" for both, or each LR's own where the
    range test finds one of them."""
    sources = {name: LR_FIND_JSON if value is None else "flags" for name, value in (("lr_min", lr_min),
                                                                                  ("lr_max", lr_max))}
    if len(set(sources.values())) == 1:
        return sources["lr_min"]
    return ", ".join(f"{name}: {source}" for name, source in sources.items())


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
            f"1: --wd below {1 / lr:g}{lower_lr} (the recipe's wd is {RECIPE.wd})")


def invalid_settings(config):
    """What is wrong with the settings of one run (a member: its peak epoch resolved), each as a line."""
    not_finite = [f"{option(name)} must be a finite number, not {value}" for name, value in asdict(config).items()
                  if isinstance(value, float) and not math.isfinite(value)]
    if not_finite:
        yield from not_finite
        return  # every check below compares with these values
    positive = dict(epochs=config.epochs, bs=config.bs, width=config.width, subset=config.subset,
                    lr_max=config.lr_max, lr_min=config.lr_min)
    for name, value in positive.items():
        if value is not None and not value > 0:
            yield f"{option(name)} must be positive, not {value}"
    if not 0 < config.peak_epoch <= config.epochs:
        yield f"--peak-epoch must lie in (0, --epochs={config.epochs}], not {config.peak_epoch}"
    if config.lr_min and config.lr_max and config.lr_min >= config.lr_max:
        yield f"--lr-min ({config.lr_min}) must be below --lr-max ({config.lr_max})"
    highest_lr_max = FINDER_END_LR / LRMAX_DIVISOR
    if config.lr_min and not config.lr_max and config.lr_min >= highest_lr_max:
        yield (f"--lr-min {config.lr_min:g} is not below any LRMAX the LR range test can find (at most "
               f"{highest_lr_max:g}: its highest LR, {FINDER_END_LR:g}, over {LRMAX_DIVISOR}): give --lr-max too, or a "
               "lower --lr-min")
    if config.find_lr and config.lr_min and config.lr_max:  # config.json would record LRs the test never found
        yield "--find-lr finds LRMIN and LRMAX: drop --lr-min and --lr-max, or --find-lr to train with them"
    if config.wd < 0:
        yield f"--wd must not be negative, not {config.wd}"
    # Without --lr-max the range test runs with this wd, so the LRMAX it finds suits it; only its
    # lowest LR can already be too high for it.
    lr, lr_flag = (config.lr_max, "--lr-max") if config.lr_max else (FINDER_START_LR, None)
    if config.wd * lr >= 1:
        yield wd_problem(config.wd, lr, lr_flag)
    if not 0 <= config.label_smoothing < 1:
        yield f"--label-smoothing must lie in [0, 1), not {config.label_smoothing}"
    if config.target_acc is not None and not 0 < config.target_acc <= 1:
        yield f"--target-acc is a fraction in (0, 1], e.g. 0.94, not {config.target_acc}"
    if not 1 <= config.runs <= RUNS_LIMIT:
        yield f"--runs must lie in [1, {RUNS_LIMIT}], not {config.runs}"
        return  # the seeds' range below depends on it
    if config.workers is not None and config.workers < 0:
        yield f"--workers must not be negative, not {config.workers}"
    cores = os.cpu_count()
    if config.workers is not None and config.workers > cores:  # each worker is a process with a copy of the data
        yield f"--workers {config.workers} is more than the {cores} cores of this machine: give at most {cores}"
    if not 0 <= config.seed <= SEED_LIMIT - config.runs:
        yield f"--seed must lie in [0, {SEED_LIMIT - config.runs}] (torch's seeds are 64-bit), not {config.seed}"
    if config.name and (Path(config.name).name != config.name or config.name == ".."):
        yield (f"--name {config.name} is not a plain folder name: drop the path separators and '..' (--out is the "
               "folder)")
    control = CONTROL.search(config.name or "")
    if control:  # it would reach the terminal raw in every line that names the run folder
        yield (f"--name {printable(config.name)} holds a control character ({printable(control[0])}): give a name of "
               "printable characters")
    if config.name and len(config.name.encode()) > NAME_LIMIT:
        yield (f"--name is {len(config.name.encode())} bytes long: a folder name holds 255, the run's timestamp and "
               f"suffixes included; give at most {NAME_LIMIT}")
    if config.sync_debug and config.precision == "fp16":
        yield ("--sync-debug and --precision fp16 do not go together: fp16's gradient scaler reads the GPU at every "
               "step by design (to skip steps that overflow); use --precision bf16 or fp32")
    if config.finder_iters < FINDER_ITERS_MIN:
        yield (f"--finder-iters must be at least {FINDER_ITERS_MIN}, not {config.finder_iters}: fewer end the LR range "
               "test's usable curve before the LRs where CIFAR-10's loss is lowest (about 0.07)")
