"""The project's compose stack on this machine's container engine, for the end-to-end tests: built
and started as `make image` and `make stack-up` do (tools/images.sh, tools/stack.sh: Docker, or
podman as root; NGC or the local stand-ins), as a compose project of its own on free host ports
with its own certificate and admin key, so a `make stack-up` of the checkout is not touched.
tests/e2e/conftest.py starts it once per session (fixture `container_stack`) for every test that
needs it, and stops it at the end of the run."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pattern_runtime import paths
from pattern_runtime.processes import free_ports

PORT_VARIABLES = ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT", "GATEWAY_HTTPS_PORT",
                  "GATEWAY_GRPC_PORT", "REDIS_PORT", "PROMETHEUS_PORT")
BUILD_TIMEOUT_S = 900
UP_TIMEOUT_S = 420
DOWN_TIMEOUT_S = 120


def engine_or_reason() -> tuple[str | None, str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        return "docker", ""
    if os.geteuid() == 0:
        return "podman", ""  # tools/images.sh installs it when missing
    return None, "no Docker engine answers and this user is not root (podman runs here as root): no container engine"


@dataclass
class ContainerStack:
    env: dict[str, str]
    engine: str
    project: str
    ports: dict[str, int]
    cert: Path
    admin_key: str
    log_dir: Path
    timings: dict[str, float]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)

    def engine_out(self, *args: str) -> str:
        done = self.run(self.engine, *args)
        assert done.returncode == 0, f"{self.engine} {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout.strip()

    def container(self, service: str) -> str:
        return self.engine_out("ps", "--filter", f"label=com.docker.compose.project={self.project}",
                               "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}")

    def state(self, service: str) -> str:
        """The service's container: running or not, its restart count and start time; '' without one."""
        label = f"label=com.docker.compose.project={self.project}"
        names = self.engine_out("ps", "-a", "--filter", label, "--filter",
                                f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").split()
        if not names:
            return ""
        return self.engine_out("inspect", "--format",
                               "running={{.State.Running}} restarts={{.RestartCount}} started={{.State.StartedAt}}",
                               names[0])

    def logs(self, service: str, lines: int = 20) -> str:
        done = self.run(self.engine, "logs", "--tail", str(lines), self.container(service) or service)
        return done.stdout + done.stderr

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of the project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {
            "containers": self.engine_out("ps", "-a", "--filter", label, "--format", "{{.Names}}").split(),
            "volumes": self.engine_out("volume", "ls", "--format", "{{.Name}}").split(),
            "networks": self.engine_out("network", "ls", "--format", "{{.Name}}").split(),
        }
        return {kind: [n for n in names if kind == "containers" or n.startswith(f"{self.project}_")]
                for kind, names in found.items()}

    def tool(self, name: str, *args: str, timeout: float) -> float:
        """Run tools/NAME with ARGS; fail with its log's tail unless it exits 0. Returns its time."""
        log = self.log_dir / f"{name.split('.')[0]}-{'-'.join(a.strip('-') for a in args) or 'run'}.log"
        started = time.monotonic()
        with log.open("w") as out:
            code = subprocess.run([str(paths.PROJECT_ROOT / "tools" / name), *args], env=self.env,
                                  cwd=paths.PROJECT_ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        if code != 0:
            tail = "\n".join(log.read_text().splitlines()[-25:])
            pytest.fail(f"tools/{name} {' '.join(args)} exited {code} (ports {self.ports}); {log}:\n{tail}")
        return time.monotonic() - started

    def down(self) -> None:
        """`tools/stack.sh down --volumes`: idempotent."""
        self.tool("stack.sh", "down", "--volumes", timeout=DOWN_TIMEOUT_S)


@contextmanager
def container_stack(engine: str, log_dir: Path) -> Iterator[ContainerStack]:
    """Builds the images, starts the stack, yields it; stops it and removes its volumes on the way out
    and prints the times of each step."""
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    project = f"tp-e2e-{os.getpid()}"
    admin_key = secrets.token_hex(16)
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "TRITON_PATTERNS_ADMIN_KEY": admin_key,
           "STACK_PROJECT": project, "GATEWAY_TLS_DIR": str(log_dir / "tls")}
    stack = ContainerStack(env, engine, project, ports, log_dir / "tls" / "tls.crt", admin_key, log_dir, {})
    stack.timings["images"] = stack.tool("images.sh", timeout=BUILD_TIMEOUT_S)
    settings = stack.run(str(paths.PROJECT_ROOT / "tools" / "images.sh"), "--env", timeout=BUILD_TIMEOUT_S)
    env.update(line.split("=", 1) for line in settings.stdout.splitlines() if "=" in line)
    if not env.get("CONTAINERS_CONF"):
        env.pop("CONTAINERS_CONF")
    try:
        stack.timings["up"] = stack.tool("stack.sh", "up", timeout=UP_TIMEOUT_S)
        yield stack
    finally:
        started = time.monotonic()
        stack.down()
        stack.timings["down"] = time.monotonic() - started
        print(f"\ncontainer stack {project}: " + ", ".join(f"{k} {v:.0f} s" for k, v in stack.timings.items()))
