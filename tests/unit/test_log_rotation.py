"""serve's log options and the logrotate config it writes (tests/e2e/test_serve.py runs logrotate
under a real serve)."""

from __future__ import annotations

import pytest

from pattern_runtime.logrotation import LogRotation, parse_size
from pattern_tools.cli import cmd_serve, parser


@pytest.mark.parametrize("text, size", [("4096", 4096), ("512k", 512 * 1024), ("10M", 10 * 2**20), ("1g", 2**30)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_a_bad_size_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--log-max-size", "ten megs"])
    assert "--log-max-size" in capsys.readouterr().err


def test_no_rotation_kept_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit, match="--log-keep must be at least 1, not 0"):
        cmd_serve(parser().parse_args(["serve", "--log-keep", "0"]))


def test_the_config_rotates_every_log_of_the_folder_in_place(tmp_path):
    for name in ("tritonserver.log", "nginx-access.log", "nginx-access.log.1", "logrotate.state"):
        (tmp_path / name).write_text("x")
    rotation = LogRotation(tmp_path, 2048, 3)
    logs = rotation.logs()
    assert [p.name for p in logs] == ["nginx-access.log", "tritonserver.log"]  # not the rotated ones
    config = rotation.config(logs)
    assert f'"{tmp_path}/nginx-access.log" "{tmp_path}/tritonserver.log" {{' in config
    for line in ("size 2048", "rotate 3", "copytruncate", "missingok", "notifempty"):
        assert f"    {line}\n" in config
    assert rotation.check() is False  # nothing over its size: logrotate is not run
