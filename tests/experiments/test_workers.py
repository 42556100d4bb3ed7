"""Worker processes: each line they write says which wrote it; the environment each starts with."""
import io
import os

from cifar10_fast.experiments.workers import Prefixed, changed_environment


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
