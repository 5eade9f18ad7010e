"""clients/harness.py on stand-in servers: a start that fails says why, and a server that
ignores SIGTERM is killed. (Real paradigm-server starts are covered by every test that uses
the harness: test_server_process, test_overload, test_explain, test_deploy, the benchmarks.)"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from clients.harness import ServerStartError, server_process

# Writes port 12345 to the file after --port-file, then sleeps, ignoring SIGTERM.
STUBBORN = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
port_file = pathlib.Path(sys.argv[sys.argv.index("--port-file") + 1])
port_file.write_text("12345")
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_server_that_exits_before_its_port_is_reported_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no data directory'); sys.exit(3)"]
    with (
        pytest.raises(ServerStartError, match="exited with 3") as failed,
        server_process(command, workdir=tmp_path, name="doomed"),
    ):
        pass
    assert "no data directory" in str(failed.value)
    assert "no data directory" in (tmp_path / "doomed.log").read_text()


def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    command = [sys.executable, "-c", STUBBORN]
    with server_process(command, workdir=tmp_path, name="stubborn") as server:
        assert server.port == 12345
        assert server.target == "127.0.0.1:12345"
        assert server.metrics_url is None
        assert server.stop(grace=0.5) == -signal.SIGKILL
    assert server.process.returncode == -signal.SIGKILL
