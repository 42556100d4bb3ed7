"""Each helper that reaches into a library's private names, against the installed library: it finds
what it reaches for, and an untried version or a name gone is one line naming the range."""
import subprocess
import sys

import pytest
import torch
from fastai.callback.progress import ProgressCallback
from fastai.data.load import DataLoader
from fastai.distributed import DistributedDL

from cifar10_fast.core import internals
from cifar10_fast.core.internals import UntriedVersion
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def fresh_checks():
    internals.check.cache_clear()
    yield
    internals.check.cache_clear()


def test_the_installed_libraries_are_ones_the_private_names_were_tried_with():
    for library in internals.TRIED:
        internals.check(library, "the tests")


def test_an_untried_version_is_one_line_naming_the_range(monkeypatch):
    monkeypatch.setattr(internals, "installed", lambda library: "2.9.0")
    with pytest.raises(UntriedVersion, match=r"^fastai 2\.9\.0 is installed, but DataLoader\._DataLoader__idxs was "
                                             r"tried with fastai 2\.8\.12 up to before 2\.9: install the versions"):
        internals.dataloader_order(DataLoader(range(4), bs=2))


def test_a_release_is_read_from_any_version_text():
    assert internals.release("2.11.0+cu128") == (2, 11, 0)
    assert internals.release("2.15.0.dev20260101") == (2, 15, 0)
    assert internals.release("3.12.1") == (3, 12, 1)


def test_a_private_name_that_is_gone_is_one_line():
    class Owner:
        pass

    with pytest.raises(UntriedVersion, match=r"has no Owner\._gone: install the versions requirements\.txt pins"):
        internals.private(Owner, "_gone", "fastai")


def test_dataloader_order_is_the_order_fastai_serves_this_epoch():
    dl = DataLoader(list(range(10)), bs=5, shuffle=True)
    batches = iter(dl)
    first = next(batches)
    order = list(internals.dataloader_order(dl))
    assert sorted(order) == list(range(10)) and first.tolist() == order[:5]


def test_a_subclass_may_replace_a_private_method_only_one_that_exists():
    @internals.overrides_private(ProgressCallback)
    def _write_stats(self, log):
        pass

    with pytest.raises(UntriedVersion, match="has no ProgressCallback._write_gone"):
        @internals.overrides_private(ProgressCallback)
        def _write_gone(self, log):
            pass


def test_the_epoch_order_broadcast_is_replaced(monkeypatch):
    monkeypatch.setattr(DistributedDL, "_broadcast", DistributedDL._broadcast)  # undone after the test

    def on_cpu(self, values, rank):
        return list(values)

    internals.broadcast_epoch_order_with(on_cpu)
    assert DistributedDL._broadcast is on_cpu


def test_fastais_unused_imports_are_what_fastais_modules_import():
    """Each module stood in for is one fastai's modules do import as they load, with the names they
    bind from it: a fastai that stopped importing one would leave a stale entry."""
    probe = ("import sys, warnings\nwarnings.simplefilter('ignore')\n"
             "import fastai.data.transforms, fastai.metrics, fastai.interpret, fastai.imports\n"
             "from cifar10_fast.core.internals import fastai_unused_imports\n"
             "unused = fastai_unused_imports()\n"
             "print(sorted(m for m in unused if m not in sys.modules))\n"
             "print(sorted(n for m, names in unused.items() for n in names "
             "if getattr(fastai.data.transforms, n, None) is None))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split("\n")[:2] == ["[]", "[]"], done.stderr


def test_compile_seconds_without_the_compiler_loaded_loads_nothing():
    probe = ("import sys\nfrom cifar10_fast.core.internals import compile_seconds\n"
             "print(compile_seconds(), 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split() == ["0.0", "False"], done.stderr


def test_compile_seconds_reads_torchs_account_once_it_has_compiled(monkeypatch):
    import torch._dynamo.utils
    monkeypatch.setattr(torch._dynamo.utils, "calculate_time_spent", lambda: {"total_wall_time": 1.5})
    assert internals.compile_seconds() == 1.5


def test_uncompiled_is_the_module_under_torch_compile():
    model = torch.nn.Linear(2, 2)
    assert internals.uncompiled(torch.compile(model)) is model
    assert internals.uncompiled(model) is model


def test_exit_without_teardown_runs_the_exit_handlers_and_keeps_the_status(tmp_path):
    probe = ("import atexit, sys\nfrom cifar10_fast.core.internals import exit_without_teardown\n"
             f"atexit.register(lambda: open({str(tmp_path / 'ran')!r}, 'w').close())\n"
             "print('written', end='')\nexit_without_teardown(3)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 3 and done.stdout == "written" and (tmp_path / "ran").exists(), done.stderr
