"""The soak's verdict (loadtest.soak): growth after warm-up past both limits is a leak, and which."""

from __future__ import annotations

from loadtest import soak


def samples(process: str, pid: int, mb: list[float]) -> list[soak.Sample]:
    return [soak.Sample(10.0 * i, process, pid, v) for i, v in enumerate(mb)]


def verdict(memory_mb: dict[str, list[float]], requests: int = 100, failures: int = 0) -> list[str]:
    taken = [s for i, (name, mb) in enumerate(memory_mb.items()) for s in samples(name, 100 + i, mb)]
    latency = [{"pattern": "synchronous", "protocol": "http", "requests": requests, "failures": failures,
                "error_rate": failures / requests if requests else 0.0}]
    memory = soak.memory_report(taken, warmup_s=10)
    return soak.problems(latency, memory, ["synchronous"], "http", soak.Limits(), max(s.t_s for s in taken))


def test_growth_counts_from_the_end_of_warm_up_and_needs_both_limits():
    assert verdict({"tritonserver": [50, 300, 320, 330]}) == []  # warm-up growth is not a leak
    assert verdict({"stub iris": [20, 40, 80, 89]}) == []  # +122% but 49 MB
    assert verdict({"tritonserver": [300, 1000, 1100, 1200]}) == []  # +200 MB but 20%
    assert verdict({"stub iris": [20, 60, 100, 200]}) == [
        "memory of stub iris (pid 100) grew 140 MB (+233%) after warm-up: 60 -> 200 MB (limits 50 MB and 50%)"]


def test_error_rate_missing_requests_and_exited_processes():
    assert verdict({"tritonserver": [1, 1]}, failures=1) == [
        "error rate of synchronous over http: 1.00% (1 of 100) > 0.10%"]
    assert verdict({"tritonserver": [1, 1]}, requests=0) == ["synchronous over http: no request"]
    assert verdict({"tritonserver": [1, 1, 1], "stub iris": [1]}) == [
        "stub iris (pid 101) exited during the soak (last seen at 0 s)"]


def test_windows_split_the_cumulative_counts():
    rows = [{"t": 100 + t, "requests": 10 * t, "failures": t // 5, "p50_ms": float(t), "p99_ms": 2.0 * t, "rps": 10}
            for t in range(1, 21)]
    found = soak.windows(rows, 100, 10)
    assert [(w["start_s"], w["end_s"], w["requests"], w["failures"]) for w in found] == [(0, 10, 100, 2),
                                                                                         (10, 20, 100, 2)]
    assert found[1]["p50_ms"] == 15.5 and found[1]["p99_ms"] == 40.0


def test_a_window_with_only_the_final_counts_joins_the_one_before():
    rows = [{"t": 100 + t, "requests": 10 * t, "failures": 0, "p50_ms": 1.0, "p99_ms": 2.0, "rps": 10}
            for t in range(1, 10)]
    rows.append({"t": 112, "requests": 120, "failures": 1, "p50_ms": float("nan"), "p99_ms": float("nan")})
    assert [(w["start_s"], w["end_s"], w["requests"], w["failures"]) for w in soak.windows(rows, 100, 10)] == [
        (0, 20, 120, 1)]
