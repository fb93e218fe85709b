"""The workers refuse a Redis too old for the queue's scripts (tests/e2e/test_worker_supervisor.py
runs the supervisor that does not restart a worker that refused)."""

from __future__ import annotations

import pytest

from pattern_kernel.job_queue import UnsupportedRedis, check_redis_version


@pytest.mark.parametrize("version", ["7.0.0", "7.0.15", "7.4.2", "8.0.1", "255.255.255"])
def test_redis_7_and_later_are_accepted(version):
    check_redis_version(version, "redis:6379")


@pytest.mark.parametrize("version", ["6.2.14", "6.0.20", "5.0.14"])
def test_an_older_redis_is_refused_naming_where_and_what_it_runs(version):
    with pytest.raises(UnsupportedRedis) as refused:
        check_redis_version(version, "cache.example:6379")
    assert str(refused.value) == (f"the job queue needs Redis 7.0 or newer (the scripts that start and end jobs "
                                  f"carry script flags), but cache.example:6379 runs Redis {version}")
