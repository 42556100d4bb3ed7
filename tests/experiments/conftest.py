"""A PostgreSQL server for the groups whose study several machines share: the one .ci/run starts
(CIFAR10_FAST_TEST_POSTGRES names it), or else one started here, as the system's unprivileged
postgres user, on the loopback, in a temporary folder, stopped at the end. Where none can be
started, the tests that need one are skipped, saying why."""
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SERVER_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(*command):
    """`command` run as the postgres user where this process is root (initdb refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def postgres():
    """The URL of an empty database on a running PostgreSQL server (a new database per session)."""
    given = os.environ.get("CIFAR10_FAST_TEST_POSTGRES")
    if given:
        yield given
        return
    if not SERVER_BINARIES or not shutil.which("psql"):
        pytest.skip("no PostgreSQL server here (apt-get install postgresql; .ci/run starts one): the tests of a "
                    "study shared through a database need one")
    binaries = SERVER_BINARIES[-1]
    folder = Path(tempfile.mkdtemp(prefix="cifar10-fast-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    made = as_postgres(binaries / "initdb", "-A", "trust", "-U", "postgres", "-D", folder / "data")
    started = made.returncode == 0 and as_postgres(
        binaries / "pg_ctl", "-D", folder / "data", "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "-l",
        folder / "log", "-w", "start").returncode == 0
    if not started:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"a PostgreSQL server could not be started here ({(made.stderr or made.stdout).strip()[:200]})")
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        "CREATE DATABASE cifar10_fast_tests"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/cifar10_fast_tests"
    finally:
        as_postgres(binaries / "pg_ctl", "-D", folder / "data", "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)
