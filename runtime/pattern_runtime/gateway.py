"""The gateway: nginx (Debian's, with its njs module) in front of tritonserver, started and stopped
like Redis, from the one config of deploy/gateway/ that the compose stack and Kubernetes use too.

    with Gateway(triton.http_address, triton.grpc_address, tls=GatewayTls(cert, key)) as gateway:
        requests.post(f"{gateway.http_url}/v2/models/iris/infer", ...)

What it does at the edge (deploy/gateway/nginx.conf.template, triton_gateway.js): TLS for HTTP and
gRPC, the API and admin keys, a body limit, every JSON input's declared shape checked against its
values (tritonserver 2.51 allocates the declared size first), a per-client rate limit (429), JSON
error bodies, an access log line per request (`access_log_entries`).

Its logs (`nginx-access.log`, `nginx-error.log`) are in `log_dir` when set (a lasting folder: serve's),
else in its directory. `stop()` is nginx's graceful quit (SIGQUIT): it stops listening, closes its idle
keep-alive connections on both sides (clients, and tritonserver's), lets requests in flight finish, and
cuts what still runs after the template's `worker_shutdown_timeout`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pattern_kernel.access import ADMIN_KEY_ENV, API_KEY_ENV, check_key
from pattern_runtime import paths
from pattern_runtime.processes import LocalServer, ManagedProcess, StartError, free_port

GATEWAY_DIR = paths.PROJECT_ROOT / "deploy" / "gateway"
TEMPLATE = GATEWAY_DIR / "nginx.conf.template"
DEBIAN_NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"  # Debian's libnginx-mod-http-js
_FIELD = re.compile(r"\$\{([A-Z_]+)\}")
_RATE = re.compile(r"^\d+r/[sm]$")
_SIZE = re.compile(r"^\d+[kKmMgG]?$")

ACCESS_LOG_FLUSH_S = 1.2  # the template's access_log ... flush=1s, and a margin
DEFAULT_BODY_LIMIT = "64m"
DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024  # values per input: 64 MB of FP32
DEFAULT_RATE = "2000r/s"
DEFAULT_BURST = 4000


class GatewayStartError(StartError):
    """nginx or its njs module is missing, the config is refused, or it was not ready in time."""


@dataclass(frozen=True)
class GatewayTls:
    """TLS at the gateway, for HTTP and gRPC: the certificate (chain) and its key, PEM files."""

    cert: Path
    key: Path

    def directives(self) -> str:
        return f"ssl_certificate {Path(self.cert).resolve()}; ssl_certificate_key {Path(self.key).resolve()};"


def self_signed_certificate(folder: Path, name: str = "127.0.0.1") -> GatewayTls:
    """A self-signed certificate for 127.0.0.1 and localhost (its own root), made with openssl in
    `folder`, for tests, benchmarks and try-outs (cert.pem, key.pem)."""
    if shutil.which("openssl") is None:
        raise GatewayStartError("openssl not found on PATH; install the system package: apt-get install openssl")
    cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return GatewayTls(cert, key)


def render(template: str, fields: dict[str, str]) -> str:
    """The template with every ${NAME} replaced; a field the template names but `fields` lacks is an error."""
    missing = sorted(set(_FIELD.findall(template)) - set(fields))
    if missing:
        raise ValueError(f"gateway config fields without a value: {', '.join(missing)}")
    return _FIELD.sub(lambda m: str(fields[m.group(1)]), template)


class Gateway(LocalServer):
    """An `nginx` child process in front of a tritonserver's HTTP and gRPC addresses (host:port).

    `host`, `http_port`, `grpc_port`: where it listens (0/None: free ports; a chosen port taken
    before nginx binds it is replaced). `api_key`/`admin_key`: None leaves inference open and
    locks the admin APIs. `rate`: nginx's limit_req rate per client address ("2000r/s"),
    `burst` requests beyond it served at once before 429s. `workers`: nginx worker processes
    ("auto": one per core). The access log is written in 64 kB buffers, at least once a second.
    `template`: another config with the same fields (the benchmark's variant without the shape check).
    """

    name = "gateway"  # nginx
    package = "nginx libnginx-mod-http-js"
    log_name = "nginx-error.log"
    access_log_name = "nginx-access.log"
    port_taken = "Address already in use"
    start_error = GatewayStartError
    log_tail_lines = 40

    def __init__(
        self,
        triton_http: str,
        triton_grpc: str,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        host: str = "127.0.0.1",
        tls: GatewayTls | None = None,
        api_key: str | None = None,
        admin_key: str | None = None,
        body_limit: str = DEFAULT_BODY_LIMIT,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        rate: str = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        workers: int | str = "auto",
        directory: Path | str | None = None,
        startup_timeout: float = 30.0,
        binary: str = "nginx",
        njs_module: str = DEBIAN_NJS_MODULE,
        template: Path = TEMPLATE,
    ):
        super().__init__(http_port, host, directory, startup_timeout, binary)
        self._grpc_port_chosen = not grpc_port
        self.grpc_port = grpc_port or free_port(host)
        if not _RATE.match(rate):
            raise ValueError(f"rate must look like 100r/s or 600r/m, not {rate!r}")
        if not _SIZE.match(body_limit):
            raise ValueError(f"body_limit must be a size such as 64m, not {body_limit!r}")
        for key, what in ((api_key, "API key"), (admin_key, "admin key")):
            if key is not None:
                check_key(key, what)
        self.triton_http, self.triton_grpc = triton_http, triton_grpc
        self.tls, self.api_key, self.admin_key = tls, api_key, admin_key
        self.body_limit, self.max_elements, self.rate, self.burst = body_limit, int(max_elements), rate, int(burst)
        self.workers, self.njs_module, self.template = workers, njs_module, Path(template)

    # -- what is run

    @property
    def access_log_path(self) -> Path:
        return Path(self.log_dir or self.directory or ".") / self.access_log_name

    @property
    def error_log_path(self) -> Path:
        return Path(self.log_dir or self.directory or ".") / self.log_name

    def fields(self) -> dict[str, str]:
        directory = self.directory or Path(".")
        ssl = " ssl" if self.tls else ""
        return {
            "GATEWAY_NJS_MODULE": self.njs_module,
            "GATEWAY_WORKERS": str(self.workers),
            "GATEWAY_RUN_DIR": str(directory),
            "GATEWAY_ERROR_LOG": str(self.error_log_path),
            "GATEWAY_ACCESS_LOG": str(self.access_log_path),
            "GATEWAY_JS_DIR": str(GATEWAY_DIR),
            "GATEWAY_HTTP_LISTEN": f"{self.host}:{self.port}{ssl}",
            "GATEWAY_GRPC_LISTEN": f"{self.host}:{self.grpc_port}{ssl} http2",
            "GATEWAY_TLS": self.tls.directives() if self.tls else "",
            "TRITON_HTTP": self.triton_http,
            "TRITON_GRPC": self.triton_grpc,
            "GATEWAY_BODY_LIMIT": self.body_limit,
            "GATEWAY_MAX_ELEMENTS": str(self.max_elements),
            "GATEWAY_RATE": self.rate,
            "GATEWAY_BURST": str(self.burst),
        }

    def config(self) -> str:
        return render(self.template.read_text(), self.fields())

    def _prepare(self) -> None:
        if not Path(self.njs_module).is_file():
            raise GatewayStartError(f"nginx's njs module {self.njs_module} is missing: "
                                    "apt-get install libnginx-mod-http-js")
        for name, path in (self.tls.__dict__.items() if self.tls else ()):
            if not Path(path).is_file():
                raise GatewayStartError(f"TLS {name} file {path} not found")
        (self.directory / "nginx.conf").write_text(self.config())

    def command(self) -> list[str]:
        directory = self.directory or Path(".")
        return [self.binary_path(), "-p", str(directory), "-c", str(directory / "nginx.conf"),
                "-e", str(self.error_log_path), "-g", "daemon off;"]

    def _shutdown(self, proc: ManagedProcess, timeout: float) -> None:
        """nginx's graceful quit (SIGQUIT), SIGKILL of its group after `timeout`."""
        proc.terminate(timeout, signum=signal.SIGQUIT)

    def environment(self) -> dict[str, str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        if self.admin_key:
            env[ADMIN_KEY_ENV] = self.admin_key
        return env

    def _new_ports(self) -> None:
        if self._port_chosen:
            self.port = free_port(self.host)
        if self._grpc_port_chosen:
            self.grpc_port = free_port(self.host)

    def is_ready(self) -> bool:
        for port in (self.port, self.grpc_port):
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    pass
            except OSError:
                return False
        return True

    # -- where it answers

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://{self.http_address}"

    def access_log_entries(self) -> list[dict]:
        """The access log so far, one dict per request (model, status, request_time, ...). nginx
        writes it at least once a second: this waits that long first."""
        time.sleep(ACCESS_LOG_FLUSH_S)
        path = self.access_log_path
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
