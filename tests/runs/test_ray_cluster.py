"""Joining a Ray cluster started with ``ray start --head``, by its address, as a user does.

Ray 2.60 switches token authentication on when ``ray start --head`` runs; a driver that joins by
``HOST:PORT`` without ``RAY_AUTH_MODE=token`` only hears "Failed to connect". ``scclip`` then says
what to do; with the setting it joins and segments. The head node is started here (on free ports,
in a process group of its own) and stopped after; the test is skipped without the ``ray`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

RAY_CLI = Path(sys.executable).parent / "ray"
TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
WINDOWS = ["--short-side", "32", "--crop", "32", "--stride", "16", "--batch-size", "1"]
START_SECONDS = 120
STOP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail("the Ray head node did not start")


@pytest.fixture
def head_node() -> Iterator[str]:
    """``HOST:PORT`` of a one-CPU Ray head node started with ``ray start --head --block``.

    Its temporary folder is its own: ``ray start`` writes the address of "the cluster on this
    machine" there (``ray_current_cluster``), and a stopped head must not leave it in the shared
    ``/tmp/ray`` for other drivers to find.
    """
    pytest.importorskip("ray")
    if not RAY_CLI.is_file():
        pytest.skip("the ray command is not installed")
    # short: Ray's socket paths under it must fit the 107 characters of a Unix socket name
    temp_dir = tempfile.mkdtemp(prefix="scclip-ray-", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY_CLI), "start", "--head", "--block", f"--port={port}", "--num-cpus=1"]
    cmd += ["--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"]
    cmd += [f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}"]
    head = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        # the head and every process it started share its process group, and nothing else does
        for sig in (signal.SIGTERM, signal.SIGKILL):  # Ray takes its time: then no more
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(timeout=STOP_SECONDS)
        shutil.rmtree(temp_dir, ignore_errors=True)


def segment_on(address: str, root: Path, out: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", **env}
    if "RAY_AUTH_MODE" not in env:
        environment.pop("RAY_AUTH_MODE", None)
    cmd = [sys.executable, "-m", "scclip_cli", "segment", "imgs", "--vocab", "classes.txt"]
    cmd += ["--out", out, *TINY, *WINDOWS, "-q", "--engine", "ray", "--ray-address", address]
    cmd += ["--workers", "1"]
    return subprocess.run(
        cmd, cwd=root, env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_joining_a_started_cluster_by_address(head_node: str, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (20 + i, 16), (40 * i, 90, 200)).save(tmp_path / "imgs" / f"im{i}.png")
    (tmp_path / "classes.txt").write_text("background\ncat\n", encoding="utf-8")

    import ray

    plain = segment_on(head_node, tmp_path, "plain")
    if tuple(int(part) for part in ray.__version__.split(".")[:2]) >= (2, 60):
        # the cluster wants a token: a clear message instead of "Failed to connect"
        assert plain.returncode == 2, plain.stderr
        message = plain.stderr.strip().splitlines()[-1]
        assert message.startswith("scclip: error: cannot start or join Ray"), message
        assert "RAY_AUTH_MODE=token" in message and "auth_token" in message, message
        assert "RAY_AUTH_TOKEN" in message and "every node" in message, message
        assert not (tmp_path / "plain" / "summary.json").exists()

    joined = segment_on(head_node, tmp_path, "joined", RAY_AUTH_MODE="token")
    assert joined.returncode == 0, joined.stderr
    summary = json.loads((tmp_path / "joined" / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["done"] == 2
    assert summary["config"]["run"]["engine"]["address"] == head_node


def test_the_token_hint_is_given_only_where_it_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    from scclip_cli.runs.ray_engine import token_auth_hint

    failed = ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    hint = token_auth_hint("10.0.0.1:6379", failed)
    assert "RAY_AUTH_MODE=token" in hint and "RAY_AUTH_TOKEN" in hint and "every node" in hint
    assert token_auth_hint("auto", failed) == ""  # Ray finds the local token itself
    assert token_auth_hint(None, failed) == ""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert token_auth_hint("10.0.0.1:6379", failed) == ""  # already set: another problem
