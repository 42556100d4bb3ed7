"""Tiny CIFAR-10-shaped data sets, built by the tests themselves, in every format data.py reads.

Each class k is a flat colour (pixel value 20 * k + 10 in every channel), so a test can tell from
a batch's pixels whether its labels are right."""
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.data.sources import cifar10_folder
from customresnet import CustomResNet
from tests.network_guard import address_host, loopback

# What augment.py sets for the tools, for the tests' own imports of albumentations: no update check on PyPI.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REPO = Path(__file__).resolve().parents[1]
SHARED_TGZ = REPO.parent / "shared" / "data" / "cifar10-jpeg.tgz"
TINY = ["--width", "8", "--bs", "16"]  # a thin model in batches of 16: a run of the tiny data sets in seconds
GIVEN_LRS = ["--lr-min", "1e-4", "--lr-max", "1e-3"]
# What a finished training run writes, the range test's files when it ran.
TRAINING_FILES = ["config.json", "history.csv", "lr_schedule.csv", "lr_schedule.png", "curves.png",
                  "confusion_matrix.png", "misclassified.png", "summary.json", "export.pkl", "model.safetensors",
                  "classes.json", "report.html"]
FINDER_FILES = ["lr_find.csv", "lr_find.png", "lr_find.json"]
RUN_FILES = TRAINING_FILES + FINDER_FILES


def class_value(k):
    return 20 * k + 10


def class_image(k):
    return np.full((32, 32, 3), class_value(k), dtype=np.uint8)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache and no CIFAR10_DATA from the environment."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    return tmp_path / "cache"


def write_folder(root, n_train=8, n_test=2, suffix=".png", classes=CLASSES):
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(k)).save(root / split / name / f"{i:04d}{suffix}")
    return root


def write_python_batches(root, per_batch=10, n_test=20):
    """The official python version's files: data_batch_1..5, test_batch, batches.meta. Every batch
    of 10 or more images holds every class, in a shuffled order, as the official batches do."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.permutation(np.arange(n) % 10).tolist()
        data = np.stack([class_image(k).transpose(2, 0, 1).reshape(-1) for k in labels])
        return {b"data": data, b"labels": labels}

    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        with open(root / name, "wb") as f:
            pickle.dump(batch(n), f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    return root


def write_tgz(folder, archive, arcname):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def check_labels_match_pixels(dl, stats):
    """Every image of class k is the flat value class_value(k): undo Normalize and compare."""
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    for x, y in dl:
        pixels = (x.as_subclass(torch.Tensor) * std + mean) * 255
        expected = torch.tensor([class_value(k) for k in y.tolist()], dtype=torch.float32).view(-1, 1, 1, 1)
        assert torch.allclose(pixels, expected.expand_as(pixels), atol=0.5)


def load(source, **kwargs):
    """(folder, dls, stats) of `source` as a run sets it up, on the CPU in batches of 8."""
    folder = cifar10_folder(str(source))
    dls, stats = cifar10_dataloaders(folder, bs=8, device="cpu", **kwargs)
    return folder, dls, stats


@pytest.fixture
def tiny_folder(tmp_path):
    return write_folder(tmp_path / "cifar10")


def real_subset(tmp_path, n_train_per_class, n_test_per_class):
    """The first images of each class from the shared JPEG copy, in fastai's layout."""
    data = Path(os.environ.get("CIFAR10_DATA", SHARED_TGZ))
    if not data.is_file():
        pytest.skip(f"{data} is not here (CI has it): set CIFAR10_DATA to the CIFAR-10 .tgz")
    wanted = {"train": n_train_per_class, "test": n_test_per_class}
    taken = {}
    with tarfile.open(data) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4 or parts[-3] not in wanted:
                continue
            key = parts[-3:-1]
            if taken.get(key, 0) < wanted[parts[-3]]:
                taken[key] = taken.get(key, 0) + 1
                target = tmp_path / "real" / Path(*parts[-3:])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return tmp_path / "real"


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    """A 2-point lr_max sweep with --runs 2 on the tiny data set, with --tta and a --target-acc low
    enough that every run stops after its first epoch; returns (out folder, group folder, stdout)."""
    import contextlib
    import io

    import train_fastai
    tmp = tmp_path_factory.mktemp("sweep")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("CIFAR10_CACHE", str(tmp / "cache"))
        train_fastai.main(["--data", str(write_folder(tmp / "cifar10")), "--out", str(tmp / "runs"), "--bs", "16",
                           "--width", "8", "--epochs", "2", "--lr-min", "1e-4", "--sweep", "lr_max=1e-3,3e-3",
                           "--runs", "2", "--seed", "5", "--tta", "--target-acc", "0.01", "--name", "lr"])
    group, = (tmp / "runs").glob("*-lr-group")
    return tmp / "runs", group, printed.getvalue()


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as train_fastai.py leaves it, for a thin model whose head always says "cat"."""
    model = CustomResNet(width=8)
    with torch.no_grad():
        model.head[2].weight.zero_()
        model.head[2].bias.copy_(torch.arange(10) == CLASSES.index("cat"))
    run = tmp_path / "run"
    run.mkdir()
    save_file(model.state_dict(), run / "model.safetensors")
    (run / "classes.json").write_text(json.dumps({"classes": CLASSES, "mean": [0.5] * 3, "std": [0.25] * 3}))
    return run


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(class_image(3)).save(folder / "a.png")
    Image.new("L", (100, 60), 128).save(folder / "gray-and-big.jpg")
    Image.new("RGBA", (16, 16), (9, 9, 9, 9)).save(folder / "small-rgba.png")
    (folder / "notes.txt").write_text("not an image, skipped in a folder")
    return folder


def train(folder, out, *flags):
    """Run train_fastai.py's main on `folder` with TINY settings; returns the run folder named by --name."""
    import train_fastai
    train_fastai.main([*TINY, "--data", str(folder), "--out", str(out), *map(str, flags)])
    run_dir, = (p for p in out.iterdir() if p.is_dir() and p.name.endswith("-" + flags[flags.index("--name") + 1]))
    return run_dir


def history_values(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns="time")


def one_line_error(cli, argv, capsys):
    """The one line `cli(argv)` ends with on bad input, after checking it is all stderr holds, that
    it starts with `error: ` and that the exit status is 2."""
    with pytest.raises(SystemExit) as e:
        cli(argv)
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def ctrl_c_while_torch_loads(argv, cwd):
    """`python train_fastai.py argv` sent Ctrl-C once its flags are checked and torch is loading
    (seconds); its exit status and stderr."""
    process = subprocess.Popen([sys.executable, str(REPO / "train_fastai.py"), *argv], cwd=cwd,
                               stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    while "libtorch" not in maps.read_text():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


@contextmanager
def loopback_only():
    """Inside, this process's connections and name lookups outside the loopback fail, and are listed
    in the list it yields, for the test to assert it empty: a tracker that swallowed the failure
    would hide it otherwise."""
    attempts = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def refused(address):
        attempts.append(address)
        return OSError(f"the tests make no connection outside the loopback: {address}")

    def guarded(real):
        def call(self, address):
            if not loopback(address_host(address)):
                raise refused(address)
            return real(self, address)
        return call

    def guarded_lookup(host, *args, **kwargs):
        if not loopback(host.decode() if isinstance(host, bytes) else host):
            raise refused(host)
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded(connect))
        mp.setattr(socket.socket, "connect_ex", guarded(connect_ex))
        mp.setattr(socket, "getaddrinfo", guarded_lookup)
        yield attempts


def free_port():
    """A port of 127.0.0.1 that nothing listens on (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_scalars(port, run, tag, timeout=60):
    """[wall time, step, value] of `tag` in `run`, from TensorBoard's HTTP API once it serves them."""
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{urllib.parse.urlencode({'run': run, 'tag': tag})}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:  # not listening yet, or the run not loaded yet (an HTTP error)
            assert time.monotonic() < deadline, f"TensorBoard served no {tag} of {run} in {timeout} s"
            time.sleep(0.5)
