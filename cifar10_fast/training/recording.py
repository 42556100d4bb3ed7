"""What the loop records and shows, kept on the device so that the host never waits for the GPU.

fastai's Recorder copies the smoothed training loss to the host after every batch (its
`AvgSmoothLoss` calls `to_detach`, whose default is `cpu=True`), its test loss and metrics do the
same after every test batch, and `ProgressCallback` reads the loss with `.item()` for the bar's
comment. On a GPU each of those is a synchronisation: the host stops queueing the next step until
the GPU has finished the last one, so the host's time adds to the GPU's instead of overlapping it.
Here the running values stay on the device and the Recorder reads them once an epoch, as it logs
the epoch's line; the bars show progress without the loss. fastai's Recorder, CSVLogger,
`lr_find` and `fit_one_cycle` run unchanged around them. (fastai's LRFinder still reads the smoothed
loss twice an iteration, to keep its best and to stop on divergence: 200 reads in the default 100
iterations, once a run.)

Where the output is no terminal (a log file, CI, a job scheduler), there are no bars: one line
per epoch, instead of the bars' carriage-return updates.
"""
import sys
from contextlib import contextmanager

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.imports import noop
from fastai.learner import AvgLoss, AvgMetric, AvgSmoothLoss, Recorder
from fastai.torch_core import find_bs, to_detach

from cifar10_fast.core.internals import overrides_private


class DeviceSmoothLoss(AvgSmoothLoss):
    """fastai's exponentially smoothed training loss, left on the device. It starts from a zero made
    on the loss's device (fastai's reset leaves a CPU zero, which a CUDA lerp refuses)."""

    def accumulate(self, learn):
        loss = to_detach(learn.loss.mean(), cpu=False)
        if self.count == 0:
            self.val = torch.zeros_like(loss)
        self.count += 1
        self.val = torch.lerp(loss, self.val, self.beta)


class DeviceAvgLoss(AvgLoss):
    """fastai's mean test loss, summed on the device."""

    def accumulate(self, learn):
        bs = find_bs(learn.yb)
        self.total += learn.to_detach(learn.loss.mean(), cpu=False) * bs
        self.count += bs


class DeviceAvgMetric(AvgMetric):
    """fastai's mean of a metric over the test set, summed on the device."""

    def accumulate(self, learn):
        bs = find_bs(learn.yb)
        self.total += learn.to_detach(self.func(learn.pred, *learn.yb), cpu=False) * bs
        self.count += bs


def cell(value):
    """A value of the epoch table as text: losses and metrics to six decimals, whether they come
    as numbers or as the strings of history.csv (the epochs before a --resume)."""
    if isinstance(value, str):
        try:
            value = float(value) if "." in value else int(value)
        except ValueError:
            return value  # the time, "00:03"
    return f"{value:.6f}" if isinstance(value, float) else str(value)


class EpochTable:
    """The epoch table as fixed-width lines: the names, then a line per epoch."""

    def __init__(self, names):
        self.widths = [max(len(name), 9) for name in names]

    def line(self, values):
        return "  ".join(cell(value).rjust(width) for value, width in zip(values, self.widths))


class TerminalBars(ProgressCallback):
    """fastai's progress bars, without the loss in the bar's comment (reading it every batch would
    make the host wait for the GPU), and the epoch table in fixed-width columns."""

    def before_fit(self):
        self.table = None
        super().before_fit()

    def after_batch(self):
        self.pbar.update(self.iter + 1)

    @overrides_private(ProgressCallback)
    def _write_stats(self, log):
        if not getattr(self, "mbar", False):
            return
        if self.table is None:
            self.table = EpochTable(log)
        self.mbar.write(self.table.line(log))


class EpochLines(Callback):
    """For output that is no terminal: the epoch table, one line per epoch, flushed as it ends."""
    order = ProgressCallback.order

    def before_fit(self):
        self.old_logger = None
        if self.learn.logger is noop:  # lr_find and get_preds log nothing
            return
        self.old_logger, self.learn.logger = self.learn.logger, self.write
        self.table = EpochTable(self.recorder.metric_names)
        self.write(self.recorder.metric_names)

    def write(self, log):
        print(self.table.line(log), flush=True)

    def after_fit(self):
        if self.old_logger is not None:
            self.learn.logger = self.old_logger


def print_line(learn, text):
    """A line of its own amid the loop's output: on a terminal, the progress bar's line is cleared
    first (a bar leaves the cursor at its end), and the bar goes on below."""
    on_a_bar = any(isinstance(cb, TerminalBars) for cb in learn.cbs)
    print(f"\r\x1b[2K{text}" if on_a_bar else text, flush=True)


class RangeTestLines(Callback):
    """Off a terminal, the LR range test's progress as the fit's is shown there, a line at a time:
    one at each tenth of its iterations, with the LR it has reached (a host value: the loss stays on
    the device)."""

    def __init__(self, iterations):
        self.iterations, self.every = iterations, max(iterations // 10, 1)

    def after_batch(self):
        done = self.train_iter  # fastai's count, which the LR finder stops at
        if self.training and (done % self.every == 0 or done == self.iterations):
            print(f"LR range test: {done}/{self.iterations} iterations, LR {self.opt.hypers[-1]['lr']:.1e}", flush=True)


def display(learn):
    """The display callback of `learn`, whichever it is."""
    return learn.cbs.filter(lambda cb: isinstance(cb, (ProgressCallback, EpochLines)))


def record_on_device(learn, terminal=None):
    """Make `learn` record its losses and metrics on the device and show them as above; `terminal`
    defaults to whether standard output is one."""
    recorder = learn.recorder
    recorder.loss, recorder.smooth_loss = DeviceAvgLoss(), DeviceSmoothLoss(beta=recorder.smooth_loss.beta)
    learn.metrics = [DeviceAvgMetric(metric.func) for metric in learn.metrics]
    learn.remove_cbs(display(learn))
    if terminal is None:
        terminal = getattr(sys.stdout, "isatty", lambda: False)()  # a stream wrapper (a tee, say) may lack it
    learn.add_cb(TerminalBars() if terminal else EpochLines())
    return learn


@contextmanager
def showing_range_test(learn, iterations):
    """The LR range test's progress shown as the fit's is: its bars on a terminal, else a line at
    each tenth of it (fastai logs no epoch of it)."""
    on_a_terminal = any(isinstance(cb, TerminalBars) for cb in learn.cbs)
    with learn.added_cbs([] if on_a_terminal else [RangeTestLines(iterations)]):
        yield learn


class FailOnHostSync(Callback):
    """On a GPU, makes any synchronisation with the host during the training batches of a fit an
    error (torch.cuda.set_sync_debug_mode): the proof that nothing in the step makes the host wait.
    It is lifted before the Recorder's end-of-epoch read, and off for the LR range test. Inert on
    a CPU, which has nothing to wait for."""
    order = Recorder.order - 1  # after_train before the Recorder reads the epoch's loss

    def before_train(self):
        if self.dls.device.type == "cuda" and not hasattr(self.learn, "lr_finder"):  # lr_find reads every step
            torch.cuda.set_sync_debug_mode("error")

    def after_train(self):
        if self.dls.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")

    after_cancel_train = after_fit = after_train


@contextmanager
def sync_debug_lifted_after(learn):
    """Whatever ends the block, a fit with FailOnHostSync, the host may read the GPU after it: when
    Ctrl-C or an error stops the training batches, fastai runs none of after_train,
    after_cancel_train and after_fit, and the checkpoint then saved copies the weights to the host,
    which the "error" mode would refuse."""
    try:
        yield
    finally:
        for callback in learn.cbs.filter(lambda cb: isinstance(cb, FailOnHostSync)):
            callback.after_train()
