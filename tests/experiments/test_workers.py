"""Worker processes: each line they write says which wrote it; the environment each starts with; a
closed terminal while they load."""
import io
import multiprocessing
import os
import signal
import time

from cifar10_fast.experiments.workers import Prefixed, changed_environment, start_worker


def test_every_line_of_a_worker_says_which_worker_wrote_it():
    out = io.StringIO()
    stream = Prefixed(out, "[worker 1] ")
    stream.write("run folder: a\nepoch")
    stream.write(" 0 done\n")
    stream.write("\n")
    assert out.getvalue() == "[worker 1] run folder: a\n[worker 1] epoch 0 done\n\n" and not stream.isatty()


def test_a_worker_starts_with_its_own_gpu_and_the_environment_comes_back(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with changed_environment({"CUDA_VISIBLE_DEVICES": "1", "ONLY_INSIDE": "x"}):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["ONLY_INSIDE"] == "x"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" and "ONLY_INSIDE" not in os.environ


# hostile input, round 5: a group outlives its terminal

def test_a_closed_terminal_while_a_worker_loads_leaves_it_running():
    """SIGHUP to the terminal's process group while a group's workers loaded torch killed a worker
    before it set its handler: `error: worker 0 was killed by SIGHUP`, the group not finished."""
    worker = start_worker(multiprocessing.get_context("spawn"), time.sleep, (1.0,), {})
    os.kill(worker.pid, signal.SIGHUP)
    worker.join(60)
    assert worker.exitcode == 0 and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
