"""The driver of bench/first_contact.py: steps run one after another, each within its budget of the
device machine's time, their output logged line by line to disk, and what comes back under $OUT
checked against what the device tool brings back (at most 8 files of 16 MiB, 2 folders down)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 450  # the driver's own: the device call's timeout_s is 480, and a rerun must still fit in 15 minutes
KILL_GRACE_S = 5  # from SIGTERM to SIGKILL for a step past its budget
# What the device tool brings back from $OUT, and what it takes along.
RETURN_FILES, RETURN_FILE_MIB, RETURN_DEPTH = 8, 16, 2
RETURN_NAME = re.compile(r"[A-Za-z0-9._-]+")
# A shared CPU runs even tiny steps slowly (their imports alone take seconds): the smoke form gives
# every step this many times its budget. The budgets themselves are tested with steps of its own.
SMOKE_SLACK = 5


class StepError(Exception):
    """A step that cannot start, said in one line."""


@dataclass
class Context:
    """What every step reads: where things go, the data, the environment of its commands, and the
    record that becomes the .json."""
    out: Path
    scratch: Path
    data: str
    smoke: bool
    stem: str  # first-contact-<device>-<date>
    site: Path
    env: dict  # the commands' environment
    plain: Callable[[str], str] = str  # text with the machine's paths as placeholders
    record: dict = field(default_factory=dict)
    python: str = sys.executable

    @property
    def results(self):
        return self.out / "bench" / "results"


@dataclass
class Step:
    name: str
    proves: str
    budget_s: float  # the most it may take: stopped beyond it
    needs_s: float  # the least time left worth starting it with
    argv: Callable[[Context], Optional[list]]  # its command, built as it starts; None: nothing to do
    collect: Optional[Callable[[Context, str], None]] = None  # what it brings back, whatever its end
    smoke_argv: tuple = ()  # added to its command in the smoke form, which says so
    smoke_skip: Optional[str] = None  # why the smoke form skips it
    after: Optional[str] = None  # the step whose output it needs


# ---------------------------------------------------------------------------------------------
# The log: on disk line by line, machine paths as placeholders.

class Log:
    """Each line into the file at once and onto the screen (the device tool's reply shows the end
    of the output), stamped with the seconds since the start and the step it comes from."""

    def __init__(self, path, placeholders, clock):
        self.file = open(path, "a", buffering=1)
        self.placeholders = sorted(((str(k), v) for k, v in placeholders.items()), key=lambda kv: -len(kv[0]))
        self.clock, self.start = clock, clock()
        self.lock = threading.Lock()

    def plain(self, text):
        for path, placeholder in self.placeholders:
            text = text.replace(path, placeholder)
        return text

    def __call__(self, text, step=""):
        line = self.plain(f"[{self.clock() - self.start:6.1f} s] {step:<12} {text.rstrip()}")
        with self.lock:
            self.file.write(line + "\n")  # line-buffered: on disk at once
            print(line, flush=True)

    def close(self):
        self.file.close()


# ---------------------------------------------------------------------------------------------
# Running the steps in order, each within its budget.

class Driver:
    def __init__(self, ctx, steps, log, budget_s=BUDGET_S, clock=time.monotonic):
        self.ctx, self.steps, self.log, self.clock = ctx, steps, log, clock
        self.deadline = clock() + budget_s
        self.slack = SMOKE_SLACK if ctx.smoke else 1
        self.current = None  # the running step's process

    def run(self, selected=None):
        """Every step of `selected` (default all) in order; returns {name: status}."""
        statuses = {}
        self.ctx.record["steps"] = []
        for step in self.steps:
            if selected is not None and step.name not in selected:
                continue
            entry = {"name": step.name, "proves": step.proves, "budget_s": step.budget_s * self.slack,
                     "status": "running", "reason": None, "seconds": None, "returncode": None, "command": None}
            self.ctx.record["steps"].append(entry)  # on disk while it runs too: a killed command says where it was
            self.run_step(step, entry, statuses)
            statuses[step.name] = entry["status"]
            self.save()
        return statuses

    def run_step(self, step, entry, statuses):
        """Run `step`, or skip it, saying why; its status, reason, seconds and command into `entry`."""
        left = self.deadline - self.clock()
        if self.ctx.smoke and step.smoke_skip:
            entry["reason"] = f"smoke: {step.smoke_skip}"
        elif step.after and statuses.get(step.after) != "ok":
            entry["reason"] = f"needs {step.after}, which did not finish ({statuses.get(step.after, 'not run')})"
        elif left < step.needs_s * self.slack:
            entry["reason"] = f"needs {step.needs_s * self.slack:.0f} s, {max(left, 0):.0f} s of the budget left"
        if entry["reason"]:
            entry["status"] = "skipped"
            self.log(f"== skipped: {entry['reason']}", step.name)
            return
        limit = entry["budget_s"] = round(min(step.budget_s * self.slack, left), 1)  # the budget it runs under
        self.save()
        self.log(f"== start: {step.proves} (budget {limit:.0f} s of {left:.0f} s left)", step.name)
        if self.ctx.smoke and step.smoke_argv:
            self.log(f"smoke: its command with {' '.join(step.smoke_argv)} added", step.name)
        start = self.clock()
        try:
            argv = step.argv(self.ctx)
            if argv is not None and self.ctx.smoke:
                argv = [*argv, *step.smoke_argv]
            if argv is None:
                entry["status"], entry["returncode"] = "ok", 0
                self.log("nothing to do", step.name)
            else:
                entry["command"] = self.log.plain(subprocess.list2cmdline(argv))
                self.log(f"$ {entry['command']}", step.name)
                entry["returncode"] = self.execute(argv, limit, step.name)
                entry["status"] = ("timed out" if entry["returncode"] is None else
                                   "ok" if entry["returncode"] == 0 else "failed")
        except StepError as e:
            entry["status"], entry["reason"] = "failed", str(e)
            self.log(f"error: {e}", step.name)
        entry["seconds"] = round(self.clock() - start, 1)
        if step.collect:
            try:
                step.collect(self.ctx, entry["status"])
            except Exception as e:  # what it could not bring back is said, and the next step runs
                entry["collect_error"] = self.log.plain(f"{type(e).__name__}: {e}")
                self.log(f"could not bring its output back: {entry['collect_error']}", step.name)
        timed_out = f" after its {limit:.0f} s" if entry["status"] == "timed out" else ""
        self.log(f"== {entry['status']}{timed_out} in {entry['seconds']:.1f} s"
                 + (f" (exit status {entry['returncode']})" if entry["status"] == "failed" else ""), step.name)

    def execute(self, argv, limit, name):
        """Run `argv` in the checkout, its output into the log line by line; its exit status, or
        None when it was stopped at `limit` seconds. It runs in its own process group, so that
        stopping it stops its DataLoader workers too."""
        proc = subprocess.Popen(argv, cwd=REPO, env=self.ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0)
        self.current = proc
        reader = threading.Thread(target=self.copy_output, args=(proc, name), daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=max(limit - 0.05, 0.01))
        except subprocess.TimeoutExpired:
            self.log(f"over its budget of {limit:.0f} s: stopping it", name)
            returncode = None
        finally:
            stop(proc)
            self.current = None
        reader.join(timeout=5)
        return returncode

    def copy_output(self, proc, name):
        for line in proc.stdout:
            self.log(line, name)

    def save(self):
        write_record(self.ctx)


def stop(proc):
    """End a step's process group: SIGTERM, then SIGKILL after a grace. Also run on a step that
    finished by itself, for what it may have left running. A process stuck in the GPU driver may
    not die at once: the next step goes on after a while regardless."""
    signal_group(proc, signal.SIGTERM)
    for grace in (KILL_GRACE_S, 30):
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
    signal_group(proc, signal.SIGKILL)


def signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group has gone already
        pass


# ---------------------------------------------------------------------------------------------
# What comes back.

def bring_back(ctx, source, target):
    """Copy `source` to `target` under $OUT; text with the machine's paths as placeholders."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix in (".json", ".log", ".txt", ".csv"):
        target.write_text(ctx.plain(source.read_text(errors="replace")))
    else:
        shutil.copyfile(source, target)


def returned_files(out):
    """Every file under `out` as (path relative to it, bytes)."""
    return sorted((str(p.relative_to(out)), p.stat().st_size) for p in out.rglob("*") if p.is_file())


def return_problems(out):
    """What the device tool would leave behind: too many files, too large, too deep, odd names."""
    files = returned_files(out)
    problems = [f"{len(files)} files: at most {RETURN_FILES} come back"] if len(files) > RETURN_FILES else []
    for name, size in files:
        parts = Path(name).parts
        if size > RETURN_FILE_MIB * 2**20:
            problems.append(f"{name}: {size / 2**20:.1f} MiB, over {RETURN_FILE_MIB} MiB")
        if len(parts) - 1 > RETURN_DEPTH:
            problems.append(f"{name}: {len(parts) - 1} folders down, over {RETURN_DEPTH}")
        if not all(RETURN_NAME.fullmatch(part) for part in parts):
            problems.append(f"{name}: a name of other characters than letters, digits, '.', '_' and '-'")
    return problems


def write_record(ctx):
    path = ctx.results / f"{ctx.stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(ctx.plain(json.dumps(ctx.record, indent=2)) + "\n")
    os.replace(tmp, path)


def summary_table(record):
    lines = ["summary:", f"{'step':<13}{'status':<11}{'seconds':>8}{'budget':>8}  reason"]
    for step in record.get("steps", []):
        seconds = "" if step["seconds"] is None else f"{step['seconds']:.1f}"
        lines.append(f"{step['name']:<13}{step['status']:<11}{seconds:>8}{step['budget_s']:>8.0f}  "
                     f"{step['reason'] or ''}")
    returned = record.get("returned", [])
    lines.append(f"returned: {len(returned)} files, {sum(f['bytes'] for f in returned) / 2**20:.1f} MiB: "
                 + ", ".join(f["file"] for f in returned))
    return lines
