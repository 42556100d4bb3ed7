"""One class per tracker, each writing a run to its library through the same four calls, which
training/tracking.py makes: `settings(values)` at the fit's start, `epoch(step, metrics)` at each
trained epoch's end, `finish(step, numbers, figures)` once the run is whole, and `close(status)`
("finished", "failed" or "stopped") however it ends. Each imports its library as it opens: a run
loads only the trackers it was asked for.

fastai ships a TensorBoard and a W&B callback, but both log the smoothed loss at every batch (a
wait for the GPU at each step), and with fastai 2.8.12 its W&B callback fails in before_fit;
MLflow 3 has no fastai integration. Hence these, from each library's own client API.
"""
import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

from filelock import FileLock
from PIL import Image

from cifar10_fast.core.run_folder import MLFLOW_ARTIFACTS, MLFLOW_DB_LOCK, TENSORBOARD_EVENTS, WANDB_FOLDER
from cifar10_fast.core.trackers import MLFLOW_TELEMETRY, is_local_store, mlflow_uri, wandb_mode

PROJECT = "cifar10-fast"  # the W&B project, and the MLflow experiment of a run with no group and no --name
RUN_DIR_TAG = "cifar10_fast.run_dir"  # the MLflow tag that finds a run again when its folder is resumed


def experiment_name(recorded):
    """A group's runs share one experiment (W&B: one group), named as the group folder; a lone run's
    is its --name, else the project's. `recorded`: the run's config.json."""
    return recorded.get("group") or recorded.get("name") or PROJECT


class TensorBoard:
    """Event files in the run folder, written through torch's SummaryWriter and flushed at each
    epoch's end: `tensorboard --logdir <out>` shows every run as its folder, live. A resumed run
    adds a file beside those of the run before; TensorBoard reads them as one run."""
    name = "TensorBoard"

    def __init__(self, run_dir, recorded, resumed):
        from torch.utils.tensorboard import SummaryWriter  # 0.1 s on top of torch, and only here
        self.writer = SummaryWriter(log_dir=str(run_dir))

    def settings(self, values):
        self.values = values
        self.writer.add_text("config", "    " + json.dumps(values, indent=1).replace("\n", "\n    "))  # code block
        self.writer.flush()

    def epoch(self, step, metrics):
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, step, numbers, figures):
        """The settings and headline numbers for TensorBoard's HParams view, in this run's own folder
        (torch's add_hparams would make a run of its own for them), and the figures as images."""
        from torch.utils.tensorboard.summary import hparams
        for summary in hparams(self.values, numbers):  # the experiment, and this run's start and end
            self.writer.file_writer.add_summary(summary)
        for tag, value in numbers.items():  # HParams reads each number off the scalar of its name
            self.writer.add_scalar(tag, value, step)
        for tag, path in figures.items():
            self.writer.file_writer.add_summary(png_summary(tag, path), step)
        self.writer.flush()

    def close(self, status):
        self.writer.close()


def png_summary(tag, path):
    """The PNG file at `path` as TensorBoard's image summary, its bytes as they are: add_image would
    decode it and encode it again (a tenth of a second for the run's three figures)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    with Image.open(path) as image:  # reads the size from the header alone
        width, height = image.size
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=path.read_bytes())  # RGBA
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class MLflow:
    """A run in an MLflow store (core/trackers.mlflow_uri): by default <out>/mlflow.db, made by the
    first run that tracks there, with the runs' files in <out>/mlartifacts/; or a team's server.
    MLflow's usage reports stay off unless the user turned them on. A resumed run folder continues
    its own run, found by the tag that holds its folder."""
    name = "MLflow"

    def __init__(self, run_dir, recorded, resumed):
        os.environ.setdefault(MLFLOW_TELEMETRY, "true")
        from mlflow import MlflowClient
        for logger in ("mlflow", "alembic"):  # each says, at INFO, that it creates or upgrades the database
            logging.getLogger(logger).setLevel(logging.WARNING)
        out = run_dir.parent  # a resumed run's --out, wherever it was given from
        uri = mlflow_uri(out)
        self.client, self.run_dir = MlflowClient(tracking_uri=uri), run_dir
        # Two runs that start together on one --out make its database once.
        with FileLock(out / MLFLOW_DB_LOCK) if is_local_store(uri) else nullcontext():
            artifacts = (out / MLFLOW_ARTIFACTS).absolute().as_uri() if is_local_store(uri) else None
            experiment = self.experiment(experiment_name(recorded), artifacts)
        found = (self.client.search_runs([experiment], f"tags.`{RUN_DIR_TAG}` = '{run_dir.resolve()}'") if resumed
                 else [])
        run = found[0] if found else self.client.create_run(experiment, run_name=run_dir.name,
                                                            tags={RUN_DIR_TAG: str(run_dir.resolve())})
        if found:
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.run_id, self.logged_params = run.info.run_id, set(run.data.params)

    def experiment(self, name, artifacts):
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else self.client.create_experiment(name, artifacts)

    def settings(self, values):
        """Each setting once: MLflow refuses to change a param, and a resumed run logs them again."""
        from mlflow.entities import Param
        params = [Param(key, str(value)) for key, value in values.items() if key not in self.logged_params]
        self.client.log_batch(self.run_id, params=params)
        self.logged_params.update(values)

    def epoch(self, step, metrics):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, now, step) for tag, value in metrics.items()])

    def finish(self, step, numbers, figures):
        """The headline numbers, and every file of the run folder (the weights included; not its
        TensorBoard events, which `tensorboard --logdir` would find twice, nor hidden ones)."""
        self.epoch(step, numbers)
        for path in sorted(self.run_dir.iterdir()):
            if path.is_file() and not path.name.startswith(".") and not path.match(TENSORBOARD_EVENTS):
                self.client.log_artifact(self.run_id, str(path))

    def close(self, status):
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED"))


class WandB:
    """A W&B run through our own callback (per epoch; fastai's logs every batch), offline unless W&B
    is configured otherwise (core/trackers.wandb_mode). Everything W&B writes lies in the run
    folder's wandb/: its run, logs, cache, staging and settings folders, which it would otherwise
    put in the home folder. A group's runs share a W&B group; a resumed run keeps its W&B id."""
    name = "W&B"

    def __init__(self, run_dir, recorded, resumed):
        folder, self.mode = run_dir / WANDB_FOLDER, wandb_mode()
        # W&B's service reads these as it starts; its usage reports, as W&B sets itself up, the mode
        # (given to wandb.init alone, an offline run still sends them at the process's exit).
        environ = {"WANDB_DIR": run_dir, "WANDB_DATA_DIR": folder / "data", "WANDB_CACHE_DIR": folder / "cache",
                   "WANDB_CONFIG_DIR": folder / "settings", "WANDB_MODE": self.mode}
        self.before = {variable: os.environ.get(variable) for variable in environ}
        os.environ.update({variable: str(value) for variable, value in environ.items()})
        try:
            import wandb
            self.wandb = wandb
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT), group=recorded.get("group"), name=run_dir.name,
                id=hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16], resume="allow", dir=str(run_dir),
                mode=self.mode, settings=wandb.Settings(console="off", silent=True))
        except BaseException:
            self.restore_environ()
            raise

    def settings(self, values):
        self.run.config.update(values, allow_val_change=True)

    def epoch(self, step, metrics):
        self.run.log(metrics, step=step)

    def finish(self, step, numbers, figures):
        self.run.log({f"figures/{tag}": self.wandb.Image(str(path)) for tag, path in figures.items()}, step=step)
        self.run.summary.update(numbers)

    def close(self, status):
        """The run finished (its exit code says how it ended) and W&B's service ended with it, so that
        the next run of a group starts one that writes into its own folder."""
        try:
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.wandb.teardown()
            if self.mode == "offline" and status == "finished":
                print(f"W&B: offline run in {Path(self.run.dir).parent}; `wandb sync` on it sends it to W&B")
        finally:
            self.restore_environ()

    def restore_environ(self):
        for variable, value in self.before.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


BACKENDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}
