"""The experiment trackers a run can be watched in: their names, what each needs installed, where
each writes, and every check of them that can refuse a run before torch loads.

    tensorboard   the default: event files in the run folder, for `tensorboard --logdir runs`
    mlflow        a run in an MLflow store: <out>/mlflow.db, or the server of MLFLOW_TRACKING_URI
    wandb         a W&B run: offline, in the run folder, unless W&B is configured otherwise

The run folder stays the source of truth; the trackers are views of it that update as the run
trains (training/tracking.py writes them). Nothing here imports a tracker: whether one is
installed is asked of importlib, so that a run refused here is refused in a fraction of a second.
"""
import importlib.util
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from cifar10_fast.core.run_folder import MLFLOW_DB

TRACKERS = ("tensorboard", "mlflow", "wandb")
NO_TRACKING = "none"
# What to install for each, pinned as requirements.txt and requirements-test.txt pin them (tested).
INSTALL = {"tensorboard": "tensorboard==2.21.0", "mlflow": "mlflow-skinny==3.18.0", "wandb": "wandb==0.31.0"}
# MLflow's database stores (sqlite, postgresql, ...) need these; mlflow-skinny leaves them out.
DATABASE_STORE = "sqlalchemy==2.1.9 alembic==1.20.1"
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
OTHER_MLFLOW_SCHEMES = ("databricks", "databricks-uc", "uc")  # MLflow's own; nothing to check here
# MLflow reports its usage over the network unless this is "true": off unless the user turned it on.
MLFLOW_TELEMETRY = "MLFLOW_DISABLE_TELEMETRY"
REACH_TIMEOUT_S = 3
WANDB_MODES = ("online", "offline", "disabled", "shared")
WANDB_API_HOST = "api.wandb.ai"


def tracking(given):
    """The trackers of the `--track` values `given` (in order, each once); "none" alone is none."""
    if given == [NO_TRACKING]:
        return ()
    if NO_TRACKING in given:
        raise ValueError(f"--track {NO_TRACKING} turns tracking off: give it alone, or drop it")
    return tuple(dict.fromkeys(given))


def tracking_problem(trackers, out, environ=os.environ):
    """The line that refuses a run with these `trackers` and this --out, or None: a tracker not
    installed, or one whose settings in the environment cannot work."""
    for tracker in trackers:  # each is the module of its name
        if importlib.util.find_spec(tracker) is None:
            return f"--track {tracker}: {tracker} is not installed: pip install {INSTALL[tracker]}"
    if "mlflow" in trackers:
        problem = mlflow_uri_problem(mlflow_uri(out, environ), "MLFLOW_TRACKING_URI" in environ)
        if problem:
            return f"--track mlflow: {problem}"
    if "wandb" in trackers:
        problem = wandb_problem(environ)
        if problem:
            return f"--track wandb: {problem}"
    return None


# ---------------------------------------------------------------------------------------------
# MLflow

def mlflow_uri(out, environ=os.environ):
    """Where MLflow keeps the runs: MLFLOW_TRACKING_URI (a team's server), else one SQLite database
    per --out, beside the run folders."""
    return environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(out).expanduser() / MLFLOW_DB).absolute()}"


def is_local_store(uri):
    """Whether MLflow's store at `uri` is a file on this machine, whose artifacts then go beside it
    (a server keeps its own)."""
    return urlparse(uri).scheme == "sqlite"


def mlflow_uri_problem(uri, given):
    """What keeps MLflow from using the store at `uri` (`given`: set by MLFLOW_TRACKING_URI), or None."""
    scheme = urlparse(uri).scheme.split("+")[0]  # postgresql+psycopg2: the dialect, then its driver
    named = f"MLFLOW_TRACKING_URI={uri}" if given else f"the local store {uri}"
    unset = "; or unset MLFLOW_TRACKING_URI for a store under --out" if given else ""
    if scheme in ("", "file"):
        return (f"{named} is a folder, which MLflow 3 refuses as a store: use sqlite:///PATH/mlflow.db or a server's "
                f"http(s)://HOST:PORT{unset}")
    if scheme in DATABASE_SCHEMES:
        missing = [module for module in ("sqlalchemy", "alembic") if importlib.util.find_spec(module) is None]
        if missing:
            return f"{named} is a database, and {missing[0]} is not installed: pip install {DATABASE_STORE}"
        folder = Path(urlparse(uri).path[1:]).parent  # sqlite:///PATH: PATH relative, sqlite:////PATH absolute
        if scheme == "sqlite" and given and not folder.is_dir():
            return f"{named}: {folder} is not a folder: give a database file in an existing folder{unset}"
        return None
    if scheme in SERVER_SCHEMES:
        if not reachable(uri):
            return f"{named} cannot be reached within {REACH_TIMEOUT_S} s: start the server, or fix the URL{unset}"
        return None
    if scheme in OTHER_MLFLOW_SCHEMES:
        return None
    return (f"{named} has a scheme MLflow does not store runs in ({scheme}): use sqlite:///PATH/mlflow.db or "
            f"http(s)://HOST:PORT{unset}")


def reachable(url, timeout=REACH_TIMEOUT_S):
    """Whether the server of `url` takes a connection within `timeout` seconds."""
    address = urlparse(url)
    default_port = 443 if address.scheme == "https" else 80
    try:
        socket.create_connection((address.hostname, address.port or default_port), timeout=timeout).close()
        return True
    except (OSError, ValueError):  # ValueError: a port that is no number
        return False


# ---------------------------------------------------------------------------------------------
# W&B

def wandb_mode(environ=os.environ):
    """How W&B runs: WANDB_MODE where the user set it, online where they gave an API key in the
    environment, else offline (nothing leaves the machine; `wandb sync` sends it later)."""
    return environ.get("WANDB_MODE") or ("online" if environ.get("WANDB_API_KEY") else "offline")


def wandb_problem(environ=os.environ):
    """What keeps W&B from running as configured, or None."""
    mode = wandb_mode(environ)
    if mode not in WANDB_MODES:
        return f"WANDB_MODE={mode} is not a W&B mode: set it to one of {', '.join(WANDB_MODES)}, or unset it"
    if mode in ("online", "shared") and not (environ.get("WANDB_API_KEY") or netrc_login(environ)):
        return (f"WANDB_MODE={mode} sends the run to W&B, but no API key is set: run `wandb login` or set "
                "WANDB_API_KEY; or unset WANDB_MODE for an offline run in the run folder")
    return None


def netrc_login(environ=os.environ):
    """Whether `wandb login` left a key in the netrc file for W&B's server."""
    host = urlparse(environ.get("WANDB_BASE_URL", f"https://{WANDB_API_HOST}")).hostname
    try:
        return netrc.netrc(environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
