"""Access keys and gRPC TLS for tritonserver: the names both sides use and the server's flags.

Triton 2.51 fences API groups behind a shared-secret header with
`--http-restricted-api=<api>[,<api>...]:<header>=<value>` and
`--grpc-restricted-protocol=` (same format; one API in one group only). Two groups here:

* admin APIs (`model-repository`, `shared-memory`, `logging`, `trace`) behind the header
  `triton-patterns-admin-key`, always, by default: loading a model means running its code,
  shared-memory registration maps server memory, the logging and trace settings write files.
  The admin key comes from `$TRITON_PATTERNS_ADMIN_KEY`, else from the key file
  (`$TRITON_PATTERNS_ADMIN_KEY_FILE`, default `build/admin.key` of the checkout), which the
  launcher creates (mode 0600, random) the first time; clients read the same variable or file.
* inference APIs (`inference`, `metadata`, `model-config`, `statistics`) behind
  `triton-patterns-api-key` when an API key is configured (`$TRITON_PATTERNS_API_KEY` for
  `triton-patterns serve` and the server images, or the launcher's `api_key`). `health` stays
  open for load balancers and probes.

Over gRPC, Triton expects each header as the metadata key `triton-grpc-protocol-<header>`;
`authorize()` names them so for gRPC clients.

Keys are restricted to `[A-Za-z0-9._~-]` (no `:`, `=`, `,`: they sit inside the flag's value).
Triton has no other input for them than its command line, so they are visible in the
process list of the server's host (`/proc/<pid>/cmdline`): run it where only it runs.
HTTP has no TLS in Triton 2.51 (the gateway, deploy/gateway, serves HTTPS and checks these keys too);
gRPC does (`GrpcTls`).

Stdlib only: the server images import this without tritonclient. The client side (headers,
reading the key file) is `triton_patterns.credentials`, which has the names above as a generated
copy (`python -m pattern_tools.sdk_gen`); the key file's creation is `pattern_runtime.admin_key`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_ENV = "TRITON_PATTERNS_ADMIN_KEY"
ADMIN_KEY_FILE_ENV = "TRITON_PATTERNS_ADMIN_KEY_FILE"
API_KEY_ENV = "TRITON_PATTERNS_API_KEY"
GRPC_ROOT_CERT_ENV = "TRITON_PATTERNS_GRPC_ROOT_CERT"  # clients: connect to gRPC over TLS, trusting this PEM
ADMIN_HEADER = "triton-patterns-admin-key"
API_HEADER = "triton-patterns-api-key"
# gRPC checks the metadata key `triton-grpc-protocol-<header>` (Triton's grpc_server.h), HTTP `<header>`
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

_KEY = re.compile(r"^[A-Za-z0-9._~-]{8,}$")


def check_key(key: str, what: str = "key") -> str:
    if not _KEY.match(key):
        raise ValueError(f"{what} must be at least 8 of A-Z a-z 0-9 . _ ~ - (e.g. `openssl rand -hex 32`)")
    return key


ADMIN_APIS = ("model-repository", "shared-memory", "logging", "trace")
API_KEY_APIS = ("inference", "metadata", "model-config", "statistics")
TRITON_APIS = frozenset(
    {"health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics", "trace",
     "logging"}
)  # tritonserver 2.51 --help

def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Access:
    """Who may call what: the server's restricted-API flags and a client's headers.

    A None key leaves its group open (the launcher's default: `pattern_runtime.endpoints.resolve_access`)."""

    admin_key: str | None = None
    api_key: str | None = None
    admin_apis: tuple[str, ...] = ADMIN_APIS
    api_key_apis: tuple[str, ...] = API_KEY_APIS

    def __post_init__(self):
        for key, what in ((self.admin_key, "admin key"), (self.api_key, "API key")):
            if key is not None:
                check_key(key, what)
        unknown = set(self.admin_apis + self.api_key_apis) - TRITON_APIS
        if unknown:
            raise ValueError(f"unknown Triton APIs {sorted(unknown)}; known: {sorted(TRITON_APIS)}")
        if set(self.admin_apis) & set(self.api_key_apis):
            raise ValueError("an API can be in one restricted group only (tritonserver refuses to start)")

    def groups(self) -> list[tuple[tuple[str, ...], str, str]]:
        pairs = ((self.admin_apis, ADMIN_HEADER, self.admin_key), (self.api_key_apis, API_HEADER, self.api_key))
        return [(apis, header, key) for apis, header, key in pairs if key and apis]

    def server_flags(self) -> list[str]:
        """`--http-restricted-api` and `--grpc-restricted-protocol`, one of each per keyed group."""
        flags = []
        for apis, header, key in self.groups():
            value = f"{','.join(apis)}:{header}={key}"
            flags += [f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}"]
        return flags

    def headers(self) -> dict[str, str]:
        """The headers (gRPC metadata) that open every group this side knows the key of."""
        return {header: key for _, header, key in self.groups()}


@dataclass(frozen=True)
class GrpcTls:
    """gRPC over TLS: the server's certificate and key (PEM files); with `root_cert` and
    `mutual`, clients must present a certificate signed by it."""

    cert: Path
    key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def __post_init__(self):
        if self.mutual and not self.root_cert:
            raise ValueError("mutual TLS needs root_cert (the CA that signs the clients' certificates)")

    def server_flags(self) -> list[str]:
        flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.root_cert:
            flags.append(f"--grpc-root-cert={self.root_cert}")
        if self.mutual:
            flags.append("--grpc-use-ssl-mutual=true")
        return flags

    def local_files(self) -> dict[str, Path]:
        return {name: Path(getattr(self, name)) for name in ("cert", "key", "root_cert") if getattr(self, name)}


def tls_from_env(environ: Mapping[str, str] | None = None, prefix: str = "TRITON_PATTERNS_GRPC_TLS_") -> GrpcTls | None:
    """`GrpcTls` from `<prefix>CERT`, `KEY`, optional `ROOT_CERT`, `MUTUAL=1` (None without CERT)."""
    env = os.environ if environ is None else environ
    if not env.get(prefix + "CERT"):
        return None
    if not env.get(prefix + "KEY"):
        raise ValueError(f"{prefix}CERT is set but {prefix}KEY is not")
    root = env.get(prefix + "ROOT_CERT")
    return GrpcTls(Path(env[prefix + "CERT"]), Path(env[prefix + "KEY"]), Path(root) if root else None,
                   env.get(prefix + "MUTUAL", "") in ("1", "true", "yes"))
