"""A throwaway PostgreSQL cluster for tests, from Debian's packaged binaries.

PostgresCluster.start() runs initdb and pg_ctl from /usr/lib/postgresql/<major>/bin in a
fresh directory under /tmp, listening on 127.0.0.1 at a free port with its unix socket in
that directory, trust authentication and no fsync (a test cluster is thrown away).
PostgreSQL refuses to run as root, and CI runs as root: then the directory is handed to
the `postgres` system user and the binaries run through `runuser -u postgres --`.

`make tools` installs the package where it is missing; without it, tests that need the
cluster are skipped (see the fixtures in tests/conftest.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

NOT_INSTALLED = "PostgreSQL is not installed: run make tools"
SUPERUSER = "postgres"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One test cluster: start(), url(database), create_database(), stop()."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        # Directly under /tmp: pytest's tmp_path is private to root (0700), so the
        # `postgres` user could not reach it; and a unix socket path must stay short.
        self.root = Path(tempfile.mkdtemp(prefix="paradigm-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        argv = list(command)
        if self._as_root:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )

    def start(self) -> PostgresCluster:
        if self._as_root:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        initdb = self._run(
            str(self.binaries / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self._check(initdb, "initdb")
        self.start_server()
        return self

    def start_server(self) -> None:
        """Starts (or restarts, after stop_server) the server on the same port."""
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self._check(started, "pg_ctl start")

    def stop_server(self) -> None:
        """Stops the server and keeps its data, for tests of an outage."""
        stopped = self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                            "-w", "stop")  # fmt: skip
        self._check(stopped, "pg_ctl stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
