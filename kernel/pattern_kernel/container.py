"""Entry point of the server images (deploy/docker/Dockerfile): run tritonserver with the
launcher's flags, configured by environment variables.

    python3 -m pattern_kernel.container [EXTRA TRITONSERVER FLAGS...]
    python3 -m pattern_kernel.container --print     # the command line as JSON, keys masked

The variables (default in brackets):

MODEL_REPOSITORY [/models]
    a folder (baked in, or a volume) or `s3://`, `gs://`, `as://` URL: Triton reads those natively
    (credentials: AWS_* / GOOGLE_APPLICATION_CREDENTIALS / AZURE_STORAGE_*)
TRITON_PATTERNS_ADMIN_KEY [a random key nobody knows: admin APIs locked]
    the admin APIs' key (model repository, shared memory, logging, trace)
TRITON_PATTERNS_API_KEY [unset: open]
    restricts inference, metadata, model config, statistics to this key
TRITON_PATTERNS_GRPC_TLS_CERT, _KEY, _ROOT_CERT, _MUTUAL [plain gRPC]
    gRPC over TLS (PEM files, e.g. a mounted Secret)
MODEL_CONTROL_MODE, LOAD_MODELS [none]
    none / explicit / poll; with explicit, a comma list of models to load ("*" all)
CACHE_SIZE_BYTES [67108864]
    Triton's local response cache (0: none)
TRITON_PATTERNS_TRACE [off]
    request tracing, as `serve --trace`: e.g.
    `rate=1000,mode=opentelemetry,url=http://otel-collector:4318/v1/traces` (`pattern_kernel.trace_config`)
TRITON_PATTERNS_HTTP_MAX_INPUT_SIZE [unset]
    bytes a JSON input may declare (`--http-max-input-size`), passed only to a tritonserver that knows
    the flag (2.59+, from `TRITON_SERVER_VERSION`, which the NGC images set)
TRITON_ARGS []
    more tritonserver flags (shell words), before those on the command line

Stdlib only: the NGC image has no tritonclient.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping

from pattern_kernel.access import ADMIN_KEY_ENV, API_KEY_ENV, Access, new_key, tls_from_env
from pattern_kernel.server_command import CONTAINER_MODELS, DEFAULT_CACHE_SIZE_BYTES, container_command
from pattern_kernel.trace_config import TraceConfig

TRACE_ENV = "TRITON_PATTERNS_TRACE"
MAX_INPUT_ENV = "TRITON_PATTERNS_HTTP_MAX_INPUT_SIZE"
VERSION_ENV = "TRITON_SERVER_VERSION"
MAX_INPUT_SINCE = (2, 59)  # the first tritonserver with --http-max-input-size


def server_version(environ: Mapping[str, str]) -> tuple[int, ...] | None:
    """The image's tritonserver version from TRITON_SERVER_VERSION ("2.62.0"), None when unset or unparsable."""
    try:
        return tuple(int(part) for part in environ[VERSION_ENV].split(".")[:2])
    except (KeyError, ValueError):
        return None


def version_flags(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(flags, notes): the flags only newer tritonservers know, for this image's version, and a
    line for each one left out."""
    size = environ.get(MAX_INPUT_ENV)
    if not size:
        return [], []
    if not size.isdigit():
        raise ValueError(f"{MAX_INPUT_ENV} must be a number of bytes, not {size!r}")
    version = server_version(environ)
    if version is not None and version >= MAX_INPUT_SINCE:
        return [f"--http-max-input-size={size}"], []
    known = environ.get(VERSION_ENV) or "of unknown version (no TRITON_SERVER_VERSION)"
    return [], [f"{MAX_INPUT_ENV} not applied: tritonserver {known} has no --http-max-input-size "
                f"(2.59+); the gateway's limits are the only ones"]


def command_from_env(environ: Mapping[str, str], argv: list[str]) -> list[str]:
    admin_key = environ.get(ADMIN_KEY_ENV) or new_key()
    mode = environ.get("MODEL_CONTROL_MODE", "none")
    load = [m.strip() for m in environ.get("LOAD_MODELS", "").split(",") if m.strip()]
    return container_command(
        environ.get("MODEL_REPOSITORY") or CONTAINER_MODELS,
        model_control_mode=mode,
        load_models=load or None,
        cache_size_bytes=int(environ.get("CACHE_SIZE_BYTES", DEFAULT_CACHE_SIZE_BYTES)),
        access=Access(admin_key=admin_key, api_key=environ.get(API_KEY_ENV) or None),
        grpc_tls=tls_from_env(environ),
        trace=TraceConfig.parse(environ[TRACE_ENV]) if environ.get(TRACE_ENV) else None,
        extra_args=[*version_flags(environ)[0], *shlex.split(environ.get("TRITON_ARGS", "")), *argv],
    )


def masked(command: list[str]) -> list[str]:
    """The command with the key values replaced by `***` (for logs)."""
    out = []
    for arg in command:
        if arg.startswith(("--http-restricted-api=", "--grpc-restricted-protocol=")):
            arg = arg[: arg.rindex("=") + 1] + "***"
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--print" in argv
    argv = [a for a in argv if a != "--print"]
    try:
        command = command_from_env(os.environ, argv)
    except ValueError as error:
        print(f"triton-patterns: {error}", file=sys.stderr)
        return 2
    for note in version_flags(os.environ)[1]:
        print(f"triton-patterns: {note}", file=sys.stderr)
    if not os.environ.get(ADMIN_KEY_ENV):
        print(f"triton-patterns: no {ADMIN_KEY_ENV}: the model-repository and shared-memory APIs are locked",
              file=sys.stderr)
    if dry_run:
        print(json.dumps(masked(command)))
        return 0
    print("triton-patterns: " + " ".join(masked(command)), file=sys.stderr, flush=True)
    os.execvp(command[0], command)  # tritonserver becomes PID 1's process: signals reach it
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
