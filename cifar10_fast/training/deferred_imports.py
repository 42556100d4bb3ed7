"""fastai's modules without the libraries they import at their top for functions a run never calls.

fastai.data.transforms imports scikit-learn for `train_test_split` (its TrainTestSplitter's),
fastai.metrics and fastai.interpret import sklearn.metrics and scipy.stats for the metrics that
wrap them, and fastai.imports imports scipy.ndimage for DICOM zooms and requests for downloads:
1.7 s of every run's start-up on 2 cores, more than half of `import torch`, for nothing a run
does. While fastai loads, each of them is a stand-in; once it has loaded, the stand-ins leave
sys.modules, so that the first use of one (a TrainTestSplitter, `skm.f1_score` in a metric)
imports the real module and any later import gets it.
"""
import importlib
import sys
import types
from contextlib import contextmanager

from cifar10_fast.core.internals import fastai_unused_imports


class StandIn(types.ModuleType):
    """A module in name only: its attributes come from the real module, imported on first use."""

    def __init__(self, name, bound_at_import):
        super().__init__(name)
        for attr in bound_at_import:
            setattr(self, attr, deferred_function(name, attr))

    def __getattr__(self, attr):
        if attr.startswith("__"):  # the import system's and inspect's questions: a module in name only
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            raise ImportError(f"{self.__name__}.{attr} was used while fastai loads, where {self.__name__} is a "
                              "stand-in: remove it from internals.fastai_unused_imports")
        return getattr(importlib.import_module(self.__name__), attr)


def deferred_function(module, name):
    """`module.name`, imported when first called."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = module
    return call


@contextmanager
def without_unused(modules=None):
    """Stand-ins for `modules` (those not loaded already; default, fastai's unused imports) while
    the block imports."""
    modules = fastai_unused_imports() if modules is None else modules
    stand_ins = {name: StandIn(name, bound) for name, bound in modules.items() if name not in sys.modules}
    for name, module in stand_ins.items():
        parent, _, child = name.rpartition(".")
        if parent in stand_ins:  # `import sklearn.metrics as skm` takes the attribute of the parent
            setattr(stand_ins[parent], child, module)
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
