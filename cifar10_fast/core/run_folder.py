"""The run folder: the names of the files a run writes, and how they are read back.

Nothing here loads torch: the tools that only read run folders answer without it.
"""
import pickle
import types

EXPORT = "export.pkl"
# Where the modules that a run's export.pkl names lived before they became the package: a learner
# exported then names `optimizer.FusedAdamW`, `recording.DeviceAvgMetric`, ...
MODULES_BEFORE_THE_PACKAGE = {
    "callbacks": "cifar10_fast.training.callbacks", "checkpoint": "cifar10_fast.training.fit",
    "data": "cifar10_fast.data.loaders", "decoded_folder": "cifar10_fast.data.decoded_folder",
    "device_loader": "cifar10_fast.data.device_loader", "hardware": "cifar10_fast.training.hardware",
    "lr_schedule": "cifar10_fast.training.lr_schedule", "optimizer": "cifar10_fast.training.optimizer",
    "outputs": "cifar10_fast.training.outputs", "recording": "cifar10_fast.training.recording",
}


class ExportUnpickler(pickle.Unpickler):
    """pickle's Unpickler that finds what an export from before the package names where it is now."""

    def find_class(self, module, name):
        return super().find_class(MODULES_BEFORE_THE_PACKAGE.get(module, module), name)


# What fastai's load_learner(pickle_module=...) hands to torch.load: pickle, with that Unpickler.
EXPORT_PICKLE = types.SimpleNamespace(**{**vars(pickle), "Unpickler": ExportUnpickler})
