"""What makes a group of runs, known before torch loads: its points (every combination of the
--sweep values, or a --search space), its workers, and where its Optuna study is kept.

A group is one study (experiments/study.py): its trials are its runs, each a run folder as any
other; by default the study is a journal file in the group folder, with --storage a database that
workers on several machines share.
"""
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cifar10_fast.core.config import (
    SWEEPABLE,
    UsageError,
    database_password,
    option,
    password_read_otherwise,
    record,
    redacted,
)

# The databases Optuna keeps a study in for several processes or machines (SQLAlchemy's URLs);
# SQLite, which several processes cannot share safely, for one worker alone.
SHARED_STORAGES = ("postgresql", "mysql")
IN_MEMORY = ("", ":memory:")  # an SQLite URL's database that is no file: sqlite://, sqlite:///:memory:
DEFAULT_TRIALS = 20
HOLDOUT_FRACTION = 0.1  # of the training images, where --holdout is not given
# Settings that do not make the group what it is: running the same command with another of them
# still continues the same study.
NOT_THE_GROUPS = ("resume", "debug", "device", "workers", "parallel", "storage", "track", "data", "out")


@dataclass(frozen=True)
class Range:
    """A --search KEY=LOW:HIGH[:log] range: floats and ints, on a log scale or not."""
    key: str
    low: float
    high: float
    log: bool

    @property
    def kind(self):
        return SWEEPABLE[self.key]


def setting_of(flag_value):
    """The setting a --sweep or --search value KEY=... is of, as the Config names it (lr-max: lr_max)."""
    return flag_value.partition("=")[0].strip().replace("-", "_")


def sweep_grid(sweeps):
    """Every combination of the --sweep KEY=V1,V2,... values, as [{key: value}]; [{}] without a sweep."""
    axes = {}
    for sweep in sweeps or []:
        key, values = setting_of(sweep), sweep.partition("=")[2]
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


def search_space(searches):
    """{key: Range} of the --search KEY=LOW:HIGH[:log] flags; {} without a search."""
    space = {}
    for search in searches or []:
        key, text = setting_of(search), search.partition("=")[2]
        if key not in SWEEPABLE:
            raise UsageError(f"--search {search}: {key or '(no key)'} cannot be searched; use KEY=LOW:HIGH[:log] with "
                             f"KEY one of {', '.join(SWEEPABLE)}")
        if key in space:
            raise UsageError(f"--search {key} is given twice: give its range once")
        parts = text.split(":")
        scale = parts.pop() if len(parts) == 3 else None
        try:
            low, high = (SWEEPABLE[key](part) for part in parts)
        except ValueError:
            raise UsageError(f"--search {search}: give KEY=LOW:HIGH or KEY=LOW:HIGH:log, LOW and HIGH "
                             f"{SWEEPABLE[key].__name__} numbers") from None
        if scale not in (None, "log") or not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise UsageError(f"--search {search}: give KEY=LOW:HIGH or KEY=LOW:HIGH:log with LOW below HIGH")
        if scale == "log" and low <= 0:
            raise UsageError(f"--search {search}: a log scale needs LOW above 0")
        space[key] = Range(key, low, high, scale == "log")
    return space


def is_group(config):
    """Whether `config` asks for several runs: seeds, a grid, or a search."""
    return config.runs > 1 or bool(config.sweep) or bool(config.search)


def group_problems(config):
    """What is wrong with a group's own settings, each as a line."""
    searching = bool(config.search)
    only_searches = [name for name in ("trials", "holdout", "prune")
                     if getattr(config, name) not in (None, False)]
    if not searching and only_searches:
        yield f"{option(only_searches[0])} goes with --search: drop it, or search"
    if searching and config.sweep:
        yield "--search and --sweep do not go together: a search chooses its own points"
    if searching and config.runs > 1:
        yield "--runs goes with --sweep: a search runs --final-runs seeds of the point it finds best"
    if config.trials is not None and config.trials < 1:
        yield f"--trials must be positive, not {config.trials}"
    if config.holdout is not None and config.holdout < 1:
        yield f"--holdout must be positive, not {config.holdout}"
    if not 1 <= config.final_runs <= 100:
        yield f"--final-runs must lie in [1, 100], not {config.final_runs}"
    if config.parallel is not None and config.parallel < 1:
        yield f"--parallel must be positive, not {config.parallel}"
    cores = os.cpu_count() or 1
    if config.parallel is not None and config.parallel > cores:  # each worker loads torch and the data
        yield (f"--parallel {config.parallel} is more than the {cores} cores of this machine: each worker is a "
               f"process of its own, with torch and the data loaded; give at most {cores}")
    if config.storage is not None:
        problem = storage_problem(config.storage, worker_count(config))
        if problem:
            yield problem


def storage_problem(url, workers):
    """Why `url` cannot keep a study for `workers` worker processes, or None."""
    scheme = urlsplit(url).scheme.split("+")[0]
    if password_read_otherwise(url):
        return (f"--storage {redacted(url)}: its password holds @, /, ? or #, which a URL reads as the end of the "
                "password or of the host: write each percent-encoded (%40, %2F, %3F, %23)")
    if scheme == "sqlite":
        return sqlite_problem(url, workers)
    if scheme not in SHARED_STORAGES:
        return (f"--storage {redacted(url)} is no database URL this tool keeps a study in: give "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or mysql://...)")
    return None


def sqlite_problem(url, workers):
    """Why the SQLite database of `url` cannot keep a study for `workers` worker processes, or None:
    one in memory is gone when the command ends, so the group could never go on; a file's folder
    must be there (SQLite makes the file alone)."""
    database = url.partition("://")[2].partition("/")[2].partition("?")[0]
    if database in IN_MEMORY:
        return (f"--storage {url} is a database in memory, gone when the command ends (and seen by no other worker): "
                "give sqlite:///PATH/study.db, or leave --storage out for a journal in the group folder")
    folder = Path(database).parent
    if not folder.is_dir():
        return f"--storage {redacted(url)}: {folder} is not a folder: give a database file in an existing folder"
    if workers > 1:
        return (f"--storage {redacted(url)}: SQLite is no database for {workers} workers at once (Optuna's own "
                "advice): use PostgreSQL or MySQL, or --parallel 1")
    return None


def absolute_storage(url):
    """`url` with an SQLite database's relative path made absolute, from the folder the command was
    typed in: the group resumed from another folder, and its study.json, mean that same file."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    database, query_mark, query = path.partition("?")
    if scheme.split("+")[0] != "sqlite" or database in IN_MEMORY or Path(database).is_absolute():
        return url
    return f"{scheme}://{host}/{Path(database).absolute()}{query_mark}{query}"


def without_password(text, url):
    """`text` (a database driver's message, say) with the password of `url` as ***: as the URL
    writes it, as the database reads it, and decoded (%40 as @)."""
    written = {urlsplit(url).password, database_password(url)} - {None} if url else set()
    for password in sorted(written | {unquote(each) for each in written}, key=len, reverse=True):
        text = text.replace(password, "***") if password else text
    return text


def visible_gpus():
    """The CUDA GPUs this process may use, known without torch: CUDA_VISIBLE_DEVICES's list where it
    is set, else the machine's device nodes (/dev/nvidia0, ...). Their ids, as CUDA_VISIBLE_DEVICES
    names them."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [gpu for gpu in given.split(",") if gpu.strip() and not gpu.strip().startswith("-")]
    nodes = sorted(Path("/dev").glob("nvidia[0-9]*"), key=lambda node: int(re.sub(r"\D", "", node.name)))
    return [re.sub(r"\D", "", node.name) for node in nodes]


def worker_count(config):
    """--parallel, or one worker per visible GPU, one on a machine without (or with --device cpu)."""
    if config.parallel is not None:
        return config.parallel
    return max(len(visible_gpus()), 1) if config.device != "cpu" else 1


def group_key(config, images):
    """What makes two commands the same group, as 12 hex digits: every setting but where and how it
    runs (NOT_THE_GROUPS), and the `images` it trains on (the data's fingerprint), not the path they
    lie at. The same command on the same images continues the group's study: run again, or on
    another machine that shares its --storage, wherever that machine keeps its copy."""
    settings = {key: value for key, value in record(config).items() if key not in (*NOT_THE_GROUPS, "data_given")}
    return hashlib.sha256(json.dumps({**settings, "images": images}, sort_keys=True).encode()).hexdigest()[:12]
