"""The benchmark's quick mode end to end: every setup (in-process limit, Triton variants, FastAPI
peers) starts, answers correctly and is measured. No timing assertions: the machine is shared."""

from __future__ import annotations

import json
import shutil

import pytest

from loadtest import bench

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # every setup measured, 223 s under load


def test_quick_bench_every_setup_answers_correctly(tmp_path):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install wrk)")
    args = bench.parse_args(["--quick", "--concurrency", "4", "--duration", "1", "--warmup", "0.2",
                             "--out", str(tmp_path), "--no-progress"])
    assert not args.write_md  # quick mode never rewrites the committed BENCHMARKS.md
    outcomes = bench.run(args)
    bench.write_reports(outcomes, args)

    names = {o.setup.name for o in outcomes}
    assert {"ort_heavy_mlp_t2", "triton_iris_grpc", "triton_iris_http", "cache_hit_grpc", "cache_miss_grpc",
            "parallel_ensemble_grpc", "parallel_bls_grpc", "redis_cache_hit_grpc", "redis_cache_miss_grpc",
            "digits_ensemble_grpc", "digits_bls_grpc", "digits_steps_grpc", "text_ensemble_grpc", "text_bls_grpc",
            "text_redis_hit_grpc", "text_redis_miss_grpc", "data_cache_redis_grpc", "data_cache_store_grpc",
            "perf_analyzer_iris", "batch_job", "async_jobs", "fastapi_iris_w1", "fastapi_heavy_w2"} <= names
    broken = {o.setup.name: o.error or [p.first_error for p in o.points] for o in outcomes if not o.ok}
    assert not broken
    report = json.loads((tmp_path / "results.json").read_text())
    assert all(s["correct"] and s["points"] for s in report["setups"])
    assert (tmp_path / "throughput.png").stat().st_size > 0 and (tmp_path / "latency.png").stat().st_size > 0
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| target |" in markdown and "| perf_analyzer_iris | triton_iris_grpc |" in markdown
