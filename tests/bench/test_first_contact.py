"""The first-contact script: its smoke form on tiny data on the CPU (every step, the GPU-only ones
skipped or shrunk), what it would bring back from the device tool (count, size, depth, names, no
machine paths), and its budgets, order, failures and kills, with steps of the tests' own."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import save_file

from bench import (
    bench,
    reference,
)
from bench import first_contact as fc
from bench import first_contact_driver as driver
from cifar10_fast.core import settings
from customresnet import CustomResNet
from tests.conftest import REPO, one_line_error, write_folder, write_tgz

SMOKE_STATUSES = {"install": "skipped", "versions": "ok", "data": "ok", "sync-debug": "ok", "recipe": "ok",
                  "reference": "failed", "bench-1epoch": "ok", "bench-seeds": "ok"}
DATE = r"\d{4}-\d\d-\d\d"
SMOKE_RETURNS = [rf"bench/results/first-contact-cpu-smoke-{DATE}\.(log|json)",
                 rf"bench/results/cpu-smoke-{DATE}-1epoch(\.json|-profile\.txt)",
                 rf"bench/results/cpu-smoke-{DATE}\.(json|log)"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the whole script, as CI runs it: (its exit status, $OUT, the scratch
    folder, the data cache, the record, the log)."""
    tmp = tmp_path_factory.mktemp("first-contact")
    data = write_tgz(write_folder(tmp / "cifar10"), tmp / "tiny.tgz", "cifar10")
    out, scratch, cache = tmp / "out", tmp / "scratch", tmp / "cache"
    env = {**os.environ, "CIFAR10_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "bench.first_contact", "--smoke", "--data", str(data), "--out",
                           str(out), "--scratch", str(scratch)], cwd=REPO, env=env, capture_output=True, text=True)
    record_file, = (out / "bench" / "results").glob("first-contact-cpu-smoke-*.json")
    return (done.returncode, out, scratch, cache, json.loads(record_file.read_text()),
            record_file.with_suffix(".log").read_text())


def test_smoke_runs_every_step_in_order_and_goes_on_after_a_failure(smoke):
    returncode, out, scratch, cache, record, log = smoke
    assert [(s["name"], s["status"]) for s in record["steps"]] == list(SMOKE_STATUSES.items()), log
    assert returncode == 1  # a step failed: reference.py refuses the tiny run, as it must, and the benches still ran
    assert "is not the recipe (epochs=1, bs=16, width=8" in log
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["install"]["reason"].startswith("smoke: ")
    assert "train_fastai.py --epochs 2 --sync-debug --tta" in steps["sync-debug"]["command"]
    assert "train_fastai.py --epochs 24" in steps["recipe"]["command"]
    assert "-m bench.bench --rows airbench94,ours --seeds 2" in steps["bench-seeds"]["command"]
    assert "smoke: its command with --device cpu --width 8" in log  # the smoke says what it shrank
    assert re.search(r"summary:\n.*step +status", log) and record["finished"]


def test_smoke_gathers_what_each_step_proves(smoke):
    _, out, _, _, record, _ = smoke
    assert record["versions"]["problems"] == [] and record["versions"]["train_fastai.py"] == "imports"
    assert record["versions"]["fastai"] and record["versions"]["albumentations"]
    assert record["data"]["train_images"] == 80 and record["data"]["test_images"] == 20
    assert record["data"]["unpack_s"] >= 0 and record["data"]["decode_s"] >= 0
    assert record["sync_debug"]["config"]["sync_debug"] is True
    assert 0 <= record["sync_debug"]["summary"]["tta_accuracy"] <= 1
    recipe = record["recipe"]
    assert recipe["run"].endswith("-reference") and 0 <= recipe["summary"]["final_accuracy"] <= 1
    assert [row["epoch"] for row in recipe["history"]] == [0] and recipe["config"]["width"] == 8
    bench_1epoch, = (out / "bench" / "results").glob("cpu-smoke-*-1epoch.json")
    rows = {row["row"]: row["status"] for row in json.loads(bench_1epoch.read_text())["rows"]}
    assert rows == {"seed-style": "ok", "fastai-stock": "ok", "airbench94": "skipped"}
    assert "training steps of ours" in bench_1epoch.with_name(bench_1epoch.stem + "-profile.txt").read_text()


def test_smoke_brings_back_what_the_device_tool_takes_without_machine_paths(smoke):
    _, out, scratch, cache, record, _ = smoke
    returned = driver.returned_files(out)
    assert len(returned) == 6 and driver.return_problems(out) == [] and record["return_problems"] == []
    assert sorted(f["file"] for f in record["returned"]) == sorted(name for name, _ in returned)
    for name, size in returned:
        assert any(re.fullmatch(pattern, name) for pattern in SMOKE_RETURNS), name
        assert size <= 16 * 2**20 and name.count("/") <= 2
        text = (out / name).read_text()
        for path in (scratch, cache, out, REPO):
            assert str(path) not in text, (name, path)


def test_the_reference_checkpoint_fits_in_what_comes_back(tmp_path):
    """reference.py's fp16 weights of the recipe's width 64: under the 16 MiB a returned file may have."""
    state = {name: t.half() if t.is_floating_point() else t for name, t in CustomResNet(width=64).state_dict().items()}
    save_file(state, tmp_path / "customresnet-cifar10.safetensors")
    assert (tmp_path / "customresnet-cifar10.safetensors").stat().st_size < driver.RETURN_FILE_MIB * 2**20


def test_every_command_the_gpu_runs_is_one_its_tool_takes(tmp_path, monkeypatch, capsys):
    """The GPU form's flags, which the smoke form partly overrides, parsed by the tools they go to,
    as on the GPU machine (a GPU, the data in .carry/): a typo there would cost a step of the one GPU run."""
    monkeypatch.setattr(settings, "no_cuda_here", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / fc.DATA).parent.mkdir(parents=True)
    (tmp_path / fc.DATA).write_bytes(b"the archive")
    ctx = gpu_context(tmp_path)
    (ctx.scratch / "runs" / "20260101-000000-reference").mkdir(parents=True)
    commands = {step.name: step.argv(ctx) for step in fc.STEPS if step.name != "install"}
    assert list(commands) == fc.STEP_NAMES[1:]
    for name, argv in commands.items():
        assert argv[0] == ctx.python and "--smoke" not in argv, name
        script = argv[1] if argv[1] != "-m" else argv[2]
        flags = argv[argv.index(script) + 1:]
        if script == "train_fastai.py":
            settings.parse_args(flags)
        elif script == "bench.bench":
            args = bench.parse_args(flags)
            assert not args.smoke and args.width == 64 and args.bs == 512
        elif script == "bench.first_contact":
            fc.parse_args(flags)
        else:
            assert script == "bench.reference"
            assert "is not a finished training run" in one_line_error(reference.main, flags[:-1], capsys)
    assert "--epochs 24" in " ".join(commands["recipe"])
    assert "--rows airbench94,ours" in " ".join(commands["bench-seeds"])


def gpu_context(tmp_path, **changes):
    ctx = fc.Context(out=tmp_path / "out", scratch=tmp_path / "scratch", data=fc.DATA, smoke=False,
                     stem="first-contact-test", site=tmp_path / "site", env=dict(os.environ))
    for key, value in changes.items():
        setattr(ctx, key, value)
    return ctx


# ---------------------------------------------------------------------------------------------
# Budgets, order, failures and kills, with steps of the tests' own.

def python_step(name, code, budget_s=30, needs_s=0, **kwargs):
    return fc.Step(name, f"runs {name}", budget_s, needs_s, lambda ctx: [sys.executable, "-c", code], **kwargs)


def drive(tmp_path, steps, *flags, clock=time.monotonic):
    args = fc.parse_args(["--out", str(tmp_path / "out"), "--scratch", str(tmp_path / "scratch"), *flags])
    returncode = fc.first_contact(args, [], steps=steps, clock=clock)
    record_file, = (tmp_path / "out" / "bench" / "results").glob("first-contact-*.json")
    return returncode, json.loads(record_file.read_text()), record_file.with_suffix(".log").read_text()


def test_a_step_past_its_budget_is_stopped_and_the_next_one_runs(tmp_path):
    started = time.monotonic()
    returncode, record, log = drive(tmp_path, [
        python_step("slow", "import time; print('slow started', flush=True); time.sleep(60)", budget_s=3),
        python_step("next", "print('next ran')")])
    assert time.monotonic() - started < 30  # stopped, not waited for
    assert [(s["name"], s["status"]) for s in record["steps"]] == [("slow", "timed out"), ("next", "ok")]
    assert "slow started" in log and "over its budget of 3 s: stopping it" in log
    assert "== timed out after its 3 s" in log and "next ran" in log and returncode == 1


def test_a_failed_step_stops_only_itself_and_what_needs_its_output(tmp_path):
    returncode, record, log = drive(tmp_path, [
        python_step("breaks", "import sys; print('about to fail'); sys.exit(3)"),
        python_step("needs-it", "print('must not run')", after="breaks"),
        python_step("independent", "print('independent ran')")])
    assert [(s["name"], s["status"], s["returncode"]) for s in record["steps"]] == [
        ("breaks", "failed", 3), ("needs-it", "skipped", None), ("independent", "ok", 0)]
    assert "needs breaks, which did not finish (failed)" in log and "must not run" not in log
    assert "== failed in" in log and "(exit status 3)" in log and "independent ran" in log


class FakeClock:
    """A clock that moves only when told: each step "takes" the seconds it is given."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def clock_step(name, clock, takes_s, budget_s, needs_s):
    def takes(ctx, status):
        clock.now += takes_s
    return fc.Step(name, f"takes {takes_s} s", budget_s, needs_s, lambda ctx: None, collect=takes)


def test_steps_run_in_order_and_one_that_no_longer_fits_is_skipped_with_a_line(tmp_path):
    clock = FakeClock()
    steps = [clock_step("first", clock, 60, 90, 10), clock_step("second", clock, 30, 120, 30),
             clock_step("too-big", clock, 0, 120, 20), clock_step("fits", clock, 5, 60, 5)]
    _, record, log = drive(tmp_path, steps, "--budget", "100", clock=clock)
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("first", "ok"), ("second", "ok"), ("too-big", "skipped"), ("fits", "ok")]
    assert "too-big      == skipped: needs 20 s, 10 s of the budget left" in log
    assert "second       == start: takes 30 s (budget 40 s of 40 s left)" in log  # capped by what is left


def test_steps_picks_steps_in_their_order(tmp_path):
    clock = FakeClock()
    steps = [clock_step(name, clock, 1, 10, 1) for name in ("install", "versions", "data", "recipe")]
    _, record, _ = drive(tmp_path, steps, "--steps", "recipe,versions", clock=clock)
    assert [s["name"] for s in record["steps"]] == ["install", "versions", "recipe"]  # a fresh machine needs install


def test_the_log_is_on_disk_line_by_line_and_survives_a_kill(tmp_path):
    """The device tool kills a command at its limit and brings back what is under $OUT."""
    driver = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from bench import first_contact as fc
step = fc.Step("hangs", "hangs", 60, 0, lambda ctx: [sys.executable, "-c",
               "import os, time; print('hanging', os.getpid(), flush=True); time.sleep(60)"])
fc.first_contact(fc.parse_args(["--out", {str(tmp_path / 'out')!r}, "--scratch", {str(tmp_path / 'scratch')!r}]),
                 [], steps=[step])
"""], cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        log_file = wait_for(lambda: next((tmp_path / "out" / "bench" / "results").glob("*.log"), None))
        hanging = wait_for(lambda: re.search(r"hanging (\d+)", log_file.read_text()))
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    if hanging:
        os.kill(int(hanging.group(1)), signal.SIGKILL)  # its own process group: the kill did not reach it
    log = log_file.read_text()
    assert "first contact:" in log and "hangs        == start: hangs" in log and "hangs        hanging" in log
    record = json.loads(log_file.with_suffix(".json").read_text())
    assert [(s["name"], s["status"]) for s in record["steps"]] == [("hangs", "running")]  # where it was


def wait_for(found, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("not found in time")


def test_what_would_not_come_back_is_named(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    for i in range(7):
        (tmp_path / f"f{i}.txt").write_text("x")
    (tmp_path / "a" / "b" / "ok.txt").write_text("two folders down comes back")
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("three does not")
    (tmp_path / "a" / "odd name.txt").write_text("a space")
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(17 * 2**20)
    problems = driver.return_problems(tmp_path)
    assert problems == ["11 files: at most 8 come back", "a/b/c/deep.txt: 3 folders down, over 2",
                        "a/odd name.txt: a name of other characters than letters, digits, '.', '_' and '-'",
                        "big.bin: 17.0 MiB, over 16 MiB"]


def test_install_says_to_prepare_and_installs_once(tmp_path, monkeypatch):
    monkeypatch.setattr(fc, "CARRY", tmp_path / ".carry")
    ctx = gpu_context(tmp_path)
    with pytest.raises(fc.StepError, match="run `python -m bench.first_contact --prepare`"):
        fc.install_argv(ctx)
    (tmp_path / ".carry" / "wheels-py312").mkdir(parents=True)
    (tmp_path / ".carry" / "wheels-py312" / "fastai-2.8.12-py3-none-any.whl").write_bytes(b"wheel")
    argv = fc.install_argv(ctx)
    assert argv[:4] == [ctx.python, "-m", "pip", "install"] and "--no-index" in argv and "--no-deps" in argv
    assert argv[argv.index("--target") + 1] == str(ctx.site) and argv[-1].endswith("fastai-2.8.12-py3-none-any.whl")
    ctx.site.mkdir()
    fc.collect_install(ctx, "failed")
    assert fc.install_argv(ctx) == argv  # a failed install is tried again
    fc.collect_install(ctx, "ok")
    assert fc.install_argv(ctx) is None  # a warm machine with the same wheels: nothing to do


def test_prepare_copies_the_wheels_and_the_data_and_says_the_device_call(tmp_path, capsys):
    shared = tmp_path / "shared"
    for folder in fc.WHEELS:
        (shared / "device" / folder).mkdir(parents=True)
        (shared / "device" / folder / f"{folder}-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (shared / "data").mkdir()
    (shared / "data" / "cifar10-jpeg.tgz").write_bytes(b"data")
    carry = tmp_path / ".carry"
    (carry / "wheels-py312").mkdir(parents=True)
    (carry / "wheels-py312" / "fastai-0.1-py3-none-any.whl").write_bytes(b"an older copy")
    fc.prepare(shared, carry)
    assert sorted(p.name for p in (carry / "wheels-py312").iterdir()) == ["wheels-py312-1.0-py3-none-any.whl"]
    assert (carry / "cifar10-jpeg.tgz").read_bytes() == b"data" and (carry / "wheels-peers").is_dir()
    assert fc.DEVICE_CALL in capsys.readouterr().out


def test_prepare_refuses_more_than_the_device_tool_takes_before_copying(tmp_path, monkeypatch, capsys):
    shared = tmp_path / "shared"
    for folder in fc.WHEELS:
        (shared / "device" / folder).mkdir(parents=True)
    (shared / "data").mkdir()
    with open(shared / "data" / "cifar10-jpeg.tgz", "wb") as f:
        f.truncate(65 * 2**20)
    with pytest.raises(fc.BadInput, match="over the 64 MiB the device tool takes"):
        fc.prepare(shared, tmp_path / ".carry")
    assert not (tmp_path / ".carry").exists()


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    mine = tmp_path / "mine.txt"
    mine.write_text("precious")
    assert f"--out {mine} is not a folder" in one_line_error(fc.main, ["--out", str(mine)], capsys)
    assert mine.read_text() == "precious"


@pytest.mark.parametrize("argv,text", [
    (["--steps", "bogus", "--out", "x"], "--steps: unknown step bogus"),
    (["--steps", ",", "--out", "x"], "--steps names no step"),
    (["--budget", "0", "--out", "x"], "--budget must be a positive number of seconds, not 0"),
    (["--budget", "nan", "--out", "x"], "--budget must be a positive number of seconds, not nan"),
    (["--budget", "inf", "--out", "x"], "--budget must be a positive number of seconds, not inf"),
    ([], "no --out and no $OUT"),
    (["--prepare", "--shared", "nowhere"], "not found: give --shared the folder that holds device/ and data/"),
])
def test_a_bad_flag_is_one_line(argv, text, capsys, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    assert text in one_line_error(fc.main, argv, capsys)
