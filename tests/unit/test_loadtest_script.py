"""The benchmark scripts end as the CLI does: a failed start is one message and exit code 1."""

from __future__ import annotations

import re

import pytest

from loadtest.script import run_script
from pattern_runtime.paths import PROJECT_ROOT
from pattern_runtime.redis_server import RedisStartError


def test_a_failed_start_is_its_message_and_exit_code_1(capsys):
    def main() -> int:
        raise RedisStartError("redis-server is not installed (Debian: apt-get install redis-server)")

    with pytest.raises(SystemExit) as ended:
        run_script(main)
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err == f"{__name__}: redis-server is not installed (Debian: apt-get install redis-server)\n"


def test_main_s_exit_code_is_kept_and_other_errors_are_not_hidden():
    with pytest.raises(SystemExit) as ended:
        run_script(lambda: 3)
    assert ended.value.code == 3
    with pytest.raises(ZeroDivisionError):
        run_script(lambda: 1 // 0)


def test_every_script_of_loadtest_ends_through_run_script():
    scripts = [p for p in (PROJECT_ROOT / "loadtest").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()]
    assert scripts
    ending = re.compile(r'if __name__ == "__main__":\n    run_script\(main\)')
    assert [p.name for p in scripts if not ending.search(p.read_text())] == []
