import subprocess
import sys

import pytest

from cifar10_fast.training.deferred_imports import without_unused
from tests.conftest import REPO

HEAVY = {"heavy": (), "heavy.metrics": (), "heavy.split": ("split",)}


@pytest.fixture
def heavy_package(tmp_path, monkeypatch):
    """A package that says when it loads, and a module that imports it as fastai imports scikit-learn."""
    (tmp_path / "heavy").mkdir()
    (tmp_path / "heavy" / "__init__.py").write_text("import sys\nsys.loaded_heavy = True\n")
    (tmp_path / "heavy" / "metrics.py").write_text("def score(x):\n    return 2 * x\n")
    (tmp_path / "heavy" / "split.py").write_text("def split(items):\n    return items[:1], items[1:]\n")
    (tmp_path / "uses_heavy.py").write_text("import heavy.metrics as hm\nfrom heavy.split import split\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delattr(sys, "loaded_heavy", raising=False)
    yield
    for name in ("uses_heavy", *HEAVY):
        sys.modules.pop(name, None)


def test_a_module_stood_in_for_loads_at_its_first_use_and_leaves_no_stand_in_behind(heavy_package):
    with without_unused(HEAVY):
        import uses_heavy
    assert not hasattr(sys, "loaded_heavy") and not set(HEAVY) & set(sys.modules)
    assert uses_heavy.split([1, 2, 3]) == ([1], [2, 3])  # a name bound as it loaded: imported when called
    assert sys.loaded_heavy and sys.modules["heavy.split"].split is not uses_heavy.split
    assert uses_heavy.hm.score(2) == 4  # an attribute used later: the real module's
    assert uses_heavy.hm.score is sys.modules["heavy.metrics"].score


def test_a_module_loaded_already_is_left_as_it_is(heavy_package):
    import heavy.metrics
    with without_unused(HEAVY):
        assert sys.modules["heavy.metrics"] is heavy.metrics
        import uses_heavy
    assert uses_heavy.hm is heavy.metrics


def test_a_stand_in_used_while_the_block_imports_says_which_and_what_to_do(heavy_package):
    with without_unused(HEAVY):
        import heavy.metrics as hm
        used_while_loading = r"heavy\.metrics\.score was used while fastai loads.*fastai_unused_imports"
        with pytest.raises(ImportError, match=used_while_loading):
            hm.score(1)


def test_fastai_loads_for_a_run_without_scikit_learn_scipy_stats_requests_or_torchvision_and_still_has_them():
    """2 s of every run's start-up on 2 cores: what fastai imports for functions a run never calls
    (requests: its downloads). fastai's functions that call them still work, importing them then."""
    script = ("import sys, train_fastai\n"
              "unused = ('sklearn', 'scipy.stats', 'scipy.ndimage', 'requests', 'torchvision')\n"
              "print(sorted(name for name in unused if name in sys.modules))\n"
              "from fastai.data.transforms import TrainTestSplitter\n"
              "from fastai.metrics import F1Score, PearsonCorrCoef\n"
              "from sklearn.model_selection import train_test_split\n"
              "ours = TrainTestSplitter(test_size=0.25, random_state=0)(list(range(8)))\n"
              "print(list(map(list, ours)) == train_test_split(range(8), test_size=0.25, random_state=0))\n"
              "print(F1Score().func.__name__, PearsonCorrCoef().func.__name__)\n"
              "from fastai.imports import requests\n"
              "print(requests.codes.ok)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "True", "f1_score pearsonr", "200"]
