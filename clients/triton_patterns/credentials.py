"""The client side of access keys and gRPC TLS: the headers a client sends, read from the admin
key file when one is named.

The names are the server's (`pattern_kernel.access`, copied into contract.py). The admin key is
`$TRITON_PATTERNS_ADMIN_KEY`, else the file `$TRITON_PATTERNS_ADMIN_KEY_FILE` names; the project's
runtime names its checkout's key file there for its own processes and creates the key
(`pattern_runtime.admin_key`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path

from triton_patterns.contract import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE_ENV,
    API_HEADER,
    API_KEY_ENV,
    GRPC_HEADER_PREFIX,
    GRPC_ROOT_CERT_ENV,
    check_key,
)


def admin_key_file() -> Path | None:
    """The admin key file `$TRITON_PATTERNS_ADMIN_KEY_FILE` names (None when it is unset)."""
    name = os.environ.get(ADMIN_KEY_FILE_ENV)
    return Path(name) if name else None


def configured_admin_key() -> str | None:
    """The admin key: `$TRITON_PATTERNS_ADMIN_KEY`, else the key file's (None without either).
    A client never creates it."""
    key = os.environ.get(ADMIN_KEY_ENV)
    if key:
        return check_key(key.strip(), ADMIN_KEY_ENV)
    path = admin_key_file()
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            return check_key(path.read_text().strip(), str(path))
    return None


def client_headers(api_key: str | None = None, admin_key: str | None = None) -> dict[str, str]:
    """Headers a client sends: the given keys, else `$TRITON_PATTERNS_API_KEY` and the admin key
    (variable or key file; never created here). Empty when none is known."""
    api = api_key or os.environ.get(API_KEY_ENV) or None
    admin = admin_key or configured_admin_key()
    headers = {}
    if admin:
        headers[ADMIN_HEADER] = admin
    if api:
        headers[API_HEADER] = api
    return headers


class KeyHeaders:
    """A tritonclient plugin (`client.register_plugin(KeyHeaders(headers))`) adding the key
    headers to every HTTP request or gRPC call (streams included); explicit headers win. For
    gRPC, the names must carry GRPC_HEADER_PREFIX: use `authorize`."""

    def __init__(self, headers: Mapping[str, str]):
        self.headers = dict(headers)

    def __call__(self, request) -> None:
        for name, value in self.headers.items():
            request.headers.setdefault(name, value)


def grpc_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The same keys as gRPC metadata names (`triton-grpc-protocol-<header>`)."""
    return {k if k.startswith(GRPC_HEADER_PREFIX) else GRPC_HEADER_PREFIX + k: v for k, v in headers.items()}


def authorize(client, headers: Mapping[str, str] | None = None):
    """Register `KeyHeaders` (default: `client_headers()`) on a tritonclient HTTP or gRPC client
    (sync or asyncio), named for its protocol; returns the client."""
    headers = client_headers() if headers is None else dict(headers)
    if type(client).__module__.startswith("tritonclient.grpc"):
        headers = grpc_headers(headers)
    if headers:
        client.register_plugin(KeyHeaders(headers))
    return client


def grpc_client_options(ssl: bool | None = None, root_certificates: str | os.PathLike | None = None,
                        private_key: str | os.PathLike | None = None,
                        certificate_chain: str | os.PathLike | None = None) -> dict:
    """kwargs of `tritonclient.grpc(.aio).InferenceServerClient` for TLS: the given files, else a
    root certificate from `$TRITON_PATTERNS_GRPC_ROOT_CERT`; {} for a plain channel."""
    root = root_certificates or os.environ.get(GRPC_ROOT_CERT_ENV) or None
    if ssl is False or not (ssl or root or private_key):
        return {}
    options: dict = {"ssl": True}
    for name, value in (("root_certificates", root), ("private_key", private_key),
                        ("certificate_chain", certificate_chain)):
        if value:
            options[name] = str(value)
    return options


def http_client_options(ssl: bool | None = None, root_certificates: str | os.PathLike | None = None,
                        asynchronous: bool = False) -> dict:
    """kwargs of `tritonclient.http(.aio).InferenceServerClient` for HTTPS (Triton 2.51 has no
    HTTPS of its own: the gateway's, docs/deploy.md), trusting `root_certificates` (PEM) or the
    system's CAs; {} for plain HTTP."""
    if ssl is False or not (ssl or root_certificates):
        return {}
    cafile = str(root_certificates) if root_certificates else None
    if asynchronous:  # aiohttp takes a context
        import ssl as ssl_module

        return {"ssl": True, "ssl_context": ssl_module.create_default_context(cafile=cafile)}
    import gevent.ssl  # geventhttpclient takes a factory

    return {"ssl": True, "ssl_context_factory": functools.partial(gevent.ssl.create_default_context, cafile=cafile)}
