"""The GPU path, run on the CPU with CUDA faked (tests/fake_cuda.py): the whole train_fastai.py run as
it goes on a GPU, failing at any operator that mixes CPU and CUDA tensors, any numpy() of a CUDA
tensor, and any host read or host/device copy inside the training batches; and first, proof that
the fake GPU refuses each of those (a check that cannot fail proves nothing)."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from fastai.vision.all import ChannelsLast, MixedPrecision

import train_fastai
from bench import bench
from cifar10_fast.core.run_folder import TENSORBOARD_EVENTS
from cifar10_fast.training.optimizer import FusedAdamW
from cifar10_fast.training.recording import FailOnHostSync
from tests import fake_cuda
from tests.conftest import GIVEN_LRS, RUN_FILES, TINY
from tests.fake_cuda import FakeCuda, NotOnAGpu, PhaseEnd, PhaseStart

pytestmark = pytest.mark.skipif(fake_cuda.MISSING is not None,
                                reason=f"this torch lacks a private API that faking CUDA needs: {fake_cuda.MISSING}")


def test_the_fake_gpu_refuses_what_a_gpu_refuses():
    with FakeCuda() as gpu:
        loss = torch.ones(4).cuda().mean()
        assert loss.device == torch.device("cuda", 0) and loss.is_cuda
        with pytest.raises(NotOnAGpu, match="lerp.Scalar mixes devices"):
            torch.lerp(loss, torch.tensor(0.), 0.9)  # fastai's smoothed loss starts from a CPU zero
        with pytest.raises(NotOnAGpu, match="to numpy"):
            plt.plot([loss, loss])  # fastai's plot_lr_find hands the Recorder's losses to matplotlib
        with pytest.raises(NotOnAGpu, match="index.Tensor mixes devices"):
            torch.arange(4)[torch.arange(4, device="cuda")]  # get_preds reorders host tensors by the loader's order
        torch.arange(4, device="cuda")[torch.arange(4)]  # a host index into the GPU: a copy, as torch makes it
        with pytest.raises(NotOnAGpu, match="generator"):
            torch.randperm(4, generator=torch.Generator(), device="cuda")
        assert gpu.count(kind="host to device copy") == 2  # .cuda(), the host index
        float(loss)
        assert gpu.count(kind="host read") == 1
        gpu.in_training_batches = True
        with pytest.raises(NotOnAGpu, match="host read .* inside the training batches"):
            bool(loss > 0)
        with pytest.raises(NotOnAGpu, match="host to device copy .* inside the training batches"):
            torch.zeros(2).to("cuda")
        gpu.in_training_batches = False
        torch.cuda.set_sync_debug_mode("error")
        with pytest.raises(NotOnAGpu, match="synchronizing"):
            loss.cpu()
        torch.cuda.set_sync_debug_mode("default")
        assert np.asarray(loss.cpu()) == 1
    assert not torch.cuda.is_available()  # everything faked is undone


def run_on_the_fake_gpu(tmp_path, folder, *flags, gpu=None):
    """train_fastai.main under `gpu`, with its phases reported; returns the learners it made."""
    learners, make_learner = [], train_fastai.make_learner

    def reported(*args, **kwargs):
        learn = make_learner(*args, **kwargs)
        learn.add_cbs([PhaseStart(), PhaseEnd()])
        learners.append(learn)
        return learn

    with pytest.MonkeyPatch.context() as mp, gpu or FakeCuda():
        mp.setattr(train_fastai, "make_learner", reported)
        train_fastai.main([*TINY, "--data", str(folder), "--out", str(tmp_path / "runs"), *map(str, flags)])
    return learners


def test_a_whole_run_on_a_gpu_mixes_no_devices_and_never_waits_in_the_training_batches(tmp_path, tiny_folder):
    """The default command's path on a GPU: the range test, then a 2-epoch fit with channels-last, bf16
    and fused AdamW on the device-resident loader and its batch transforms, under --sync-debug; flip
    TTA, the interpretation and every output. Not seen here: autocast computes nothing in bf16 (the
    tensors are CPU tensors underneath), and no kernel's speed or memory (tests/fake_cuda.py)."""
    gpu = FakeCuda()
    learn, = run_on_the_fake_gpu(tmp_path, tiny_folder, "--epochs", 2, "--tta", "--sync-debug", "--name", "gpu",
                                 gpu=gpu)
    assert gpu.violations == []
    run_dir, = (tmp_path / "runs").glob("*-gpu")
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert list(run_dir.glob(TENSORBOARD_EVENTS))  # tracked by default, with no read of its own in the batches
    config, summary = (json.loads((run_dir / name).read_text()) for name in ("config.json", "summary.json"))
    assert config["device"] == "cuda" and config["precision"] == "bf16" and config["lr_source"] == "lr_find.json"
    assert summary["device"] == "fake CUDA (CPU)" and "tta_accuracy" in summary
    # The GPU's settings were in force: channels-last, bf16 mixed precision, fused AdamW, the check.
    assert {ChannelsLast, MixedPrecision, FailOnHostSync} <= {type(cb) for cb in learn.cbs}
    assert isinstance(learn.opt, FusedAdamW)
    assert gpu.sync_debug_mode == 0
    # fastai's LRFinder reads the smoothed loss twice an iteration (its best, its divergence): the
    # reads the docs promise, and the only ones of the range test's batches. It may stop before its
    # 100 iterations where the loss diverges, which lr_find.json says.
    iterations = json.loads((run_dir / "lr_find.json").read_text())["iterations"]
    finder_reads = [(phase, kind) for phase, kind, _, where in gpu.events if where.startswith("schedule.py")]
    assert set(finder_reads) == {("range test", "host read")}
    assert len(finder_reads) == 2 * iterations
    # The fit's reads come once an epoch, after the training batches: its three logged values and the
    # divergence check's worst loss.
    fit_events = [event for event in gpu.events if event[0] == "fit"]
    assert 0 < len(fit_events) <= 2 * 4, fit_events


def test_a_fit_stopped_in_its_training_batches_under_sync_debug_saves_its_checkpoint(tmp_path, tiny_folder):
    """Ctrl-C inside the training batches: fastai runs no after_train, so --sync-debug's "error" mode
    must be lifted all the same, or saving the checkpoint (a copy to the host) fails on a GPU."""
    class CtrlCInSecondEpoch(PhaseEnd):
        order = 0

        def after_batch(self):
            if self.training and self.epoch == 1:
                raise KeyboardInterrupt

    gpu = FakeCuda()
    with pytest.MonkeyPatch.context() as mp:
        make_learner = train_fastai.make_learner
        mp.setattr(train_fastai, "make_learner", lambda *a, **k: make_learner(*a, **k).add_cb(CtrlCInSecondEpoch()))
        with pytest.raises(SystemExit) as stopped:
            run_on_the_fake_gpu(tmp_path, tiny_folder, *GIVEN_LRS, "--epochs", 2, "--sync-debug", "--name", "stop",
                                gpu=gpu)
    assert stopped.value.code == 130
    assert gpu.sync_debug_mode == 0 and gpu.violations == []
    run_dir, = (tmp_path / "runs").glob("*-stop")
    assert json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"] == 1


def test_sync_debug_on_a_gpu_without_bf16_is_refused_before_any_work(tmp_path, tiny_folder, capsys):
    """Without bf16 --precision auto means fp16, whose gradient scaler reads the GPU at every step."""
    with pytest.raises(SystemExit) as refused:
        run_on_the_fake_gpu(tmp_path, tiny_folder, "--sync-debug", gpu=FakeCuda(bf16=False))
    assert refused.value.code == 2
    assert "has no bf16" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_the_bench_rows_run_on_a_gpu(tmp_path, tiny_folder, monkeypatch):
    """bench/bench.py's GPU path, which only the GPU machine runs: ours, seed-style (pinned memory,
    copies each batch to the device) and fastai-stock, with the bench's CUDA timing and memory
    figures. airbench94 needs CUDA events and streams, and --profile the CUDA driver: not here."""
    monkeypatch.setitem(bench.FULL, "matmul_size", 64)  # the bf16 matmul ceiling, timed on the CPU here
    gpu = FakeCuda()
    with gpu:
        bench.main(["--data", str(tiny_folder), "--out", str(tmp_path / "results"),
                    "--rows", "ours,seed-style,fastai-stock",
                    "--epochs", "1", "--seeds", "1", "--baseline-seeds", "1", "--width", "8", "--bs", "16",
                    "--workers", "0", *GIVEN_LRS])
    assert gpu.violations == []
    results = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert results["device"] == "fake CUDA (CPU)" and not results["smoke"]
    assert [(row["row"], row["status"]) for row in results["rows"]] == [
        ("ours", "ok"), ("seed-style", "ok"), ("fastai-stock", "ok")]
    assert all(row["fit_s_mean"] > 0 and row["peak_gpu_mib_mean"] == 0 for row in results["rows"])
