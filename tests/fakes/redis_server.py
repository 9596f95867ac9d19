"""A real ``redis-server`` for tests: its own free loopback port, no persistence, stopped by PID.

Not a fake: the store runs against the real server. It lives here next to the other local servers the
tests start. ``stop`` (SIGKILL) and ``start`` again (same port) simulate an outage and a restart.
``RedisCluster`` (three masters) and ``RedisSentinel`` (one master watched by one sentinel) are built
from the same binary, for the deployment forms the store supports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (
                    (self.workdir / "redis.log").read_text(errors="replace")
                    if (self.workdir / "redis.log").exists()
                    else ""
                )
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL by PID, like a crash; the data goes with it (no persistence)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def command(self, *args: str) -> str:
        """One command over a plain socket (inline protocol); returns the raw reply text."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(1 << 20).decode(errors="replace")

    def _answers(self) -> bool:
        try:
            return self.command("PING").startswith("+PONG")
        except OSError:
            return False


class RedisCluster:
    """Three cluster-enabled masters joined with ``redis-cli --cluster create`` (no replicas)."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [
            RedisServer(
                workdir / f"node{n}",
                # The bus port defaults to port + 10000, which may not exist or be taken: pick one.
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                ),
            )
            for n in range(3)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not all("cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinel:
    """One master and one sentinel that monitors it as ``mymaster`` (quorum 1)."""

    SERVICE = "mymaster"

    def __init__(self, workdir: Path) -> None:
        self.master = RedisServer(workdir / "master")
        self.sentinel_port = free_port()
        self._workdir = workdir / "sentinel"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.SERVICE}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.master.start()
        self._workdir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "sentinel.conf"  # a sentinel rewrites its own config file
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self._workdir}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
        )
        self._process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel", "--logfile", str(self._workdir / "sentinel.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe = RedisServer(self._workdir, port=self.sentinel_port)
        deadline = time.monotonic() + timeout_s
        while str(self.master.port) not in self._ask(probe):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test sentinel did not start")
            time.sleep(0.02)

    @staticmethod
    def _ask(probe: RedisServer) -> str:
        try:
            return probe.command("SENTINEL", "get-master-addr-by-name", RedisSentinel.SERVICE)
        except OSError:
            return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.master.stop()
