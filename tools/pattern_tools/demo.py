"""The main demonstration: every pattern called through the client SDK against a real
tritonserver and a real Redis, printing what each returned, then stopping what it started.

Run it with `make demo` or `triton-patterns demo` (add `--url HOST:PORT` to use a running
server instead of starting one).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

from pattern_runtime.stack import running_stack
from triton_patterns.client import PatternClient, PatternError, Prediction

if TYPE_CHECKING:
    pass

console = Console(width=None if Console().is_terminal else 130)

IRIS_SAMPLES = [  # (features in cm, true species), rows of scikit-learn's iris data
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([6.4, 3.2, 4.5, 1.5], "versicolor"),
    ([6.7, 3.0, 5.2, 2.3], "virginica"),
]

TEXT_SAMPLES = [  # (text, expected topic); not part of the generated training set
    ("The goalkeeper saved a penalty in the last minute of the cup final.", "sports"),
    ("The new laptop ships with a faster processor and more memory.", "technology"),
    ("Slow-cook the beef stew with carrots, garlic and red wine.", "food"),
    ("Heavy rain and strong winds are expected along the coast tonight.", "weather"),
]

ORCHESTRATED = [  # (pattern, model, features, expected species)
    ("serial_bls", "iris_cascade", [5.1, 3.5, 1.4, 0.2], "setosa"),
    ("serial_bls", "iris_cascade", [6.0, 2.7, 5.1, 1.6], "versicolor"),
    ("serial_bls", "iris_cascade_degraded", [6.0, 2.7, 5.1, 1.6], "versicolor"),
    ("parallel_ensemble", "iris_vote", [6.7, 3.0, 5.2, 2.3], "virginica"),
    ("parallel", "iris_parallel", [6.7, 3.0, 5.2, 2.3], "virginica"),
    ("parallel", "iris_parallel_strict", [6.7, 3.0, 5.2, 2.3], "setosa"),  # the default answer
    ("circuit_breaker", "iris_breaker", [6.7, 3.0, 5.2, 2.3], "virginica"),  # closed: the target's answer
]


def digits_export_labels():
    from pattern_runtime.datasets.digits import load_test_split

    return load_test_split()


def _expect_source(prediction: Prediction, source: str) -> Prediction:
    if prediction.source != source:
        raise PatternError(prediction.model, f"expected the data from {source}, got {prediction.source}")
    return prediction


def _expect_hit(prediction: Prediction, hit: bool) -> Prediction:
    if prediction.cache_hit is not hit:
        raise PatternError(prediction.model, f"expected cache_hit={hit}, got {prediction.cache_hit}")
    return prediction


def _keep(reports: list, model: str, prediction: Prediction) -> Prediction:
    if prediction.report is not None:
        reports.append((model, prediction.report))
    return prediction


def _summary(report) -> str:
    if isinstance(report, list):  # serial: one entry per step
        return ", ".join(
            f"{e['step']}={e['status']}" + (f" ({e['ms']} ms)" if "ms" in e else "") for e in report
        )
    targets = ", ".join(f"{t['target']}:{t['version']}={t['status']}" for t in report["targets"])
    return f"{targets}; {report['answers']} answers, fallback={report['fallback']}, {report['elapsed_ms']} ms"


def digit_samples(count: int = 3) -> list[tuple[bytes, int]]:
    """Held-out digits (never seen in training) encoded as PNG files, with their true labels."""
    from pattern_runtime.datasets.digits import encode_digit_png, load_test_split

    images, labels = load_test_split()
    return [(encode_digit_png(images[i]), int(labels[i])) for i in range(count)]


def _row(table: Table, pattern: str, given: str, expected: str, fn: Callable[[], Prediction]) -> bool:
    try:
        p = fn()
    except PatternError as exc:
        table.add_row(pattern, given, "-", "-", f"[red]error: {exc}[/red]", expected, "-")
        return False
    ok = p.label == expected
    mark = "[green]ok[/green]" if ok else "[red]WRONG[/red]"
    table.add_row(
        pattern, given, p.model, p.version,
        f"{p.label} (p={float(np.max(p.scores)):.3f}) {mark}", expected, f"{p.latency_ms:.1f}",
    )
    return ok


def run_patterns(url: str) -> bool:
    """Call every pattern; print a table; return True when every answer was right."""
    table = Table(title="Patterns through the client SDK", show_lines=False)
    for column in ("pattern", "input", "model", "version", "output", "expected", "ms"):
        table.add_column(column)
    ok = True
    with PatternClient(url) as client:
        for features, species in IRIS_SAMPLES:
            ok &= _row(table, "web_single", str(features), species,
                       lambda f=features: client.web_single(f))
            for version in (1, 2):
                ok &= _row(table, "synchronous", f"{features} v{version}", species,
                           lambda f=features, v=version: client.synchronous(f, version=v))
        for png, digit in digit_samples():
            for form in ("ensemble", "bls"):
                ok &= _row(table, f"prep_pred ({form})", f"PNG, {len(png)} bytes",
                           str(digit), lambda b=png, f=form: client.prep_pred(b, form=f))
        for text, topic in TEXT_SAMPLES:
            ok &= _row(table, "serial (ensemble)", text[:38] + "...", topic, lambda t=text: client.serial(t))
        cached_text = f"Fresh snow fell on the ski slopes overnight ({time.strftime('%H:%M:%S')})."
        for attempt in ("1st: miss", "2nd: hit"):
            ok &= _row(table, f"prediction_cache ({attempt})", cached_text[:38] + "...", "weather",
                       lambda a=attempt: _expect_hit(client.prediction_cache(cached_text), a.endswith("hit")))
        _, digit_labels = digits_export_labels()
        for model in ("digits_by_id", "digits_by_id_prep"):
            for attempt in ("store", "redis"):
                ok &= _row(table, f"data_cache ({model}, from {attempt})", "id digit-1", str(digit_labels[1]),
                           lambda m=model, a=attempt: _expect_source(client.data_cache("digit-1", model=m), a))
        reports = []
        for name, model, row, expected in ORCHESTRATED:
            ok &= _row(table, f"{name} ({model})", str(row), expected,
                       lambda n=name, m=model, r=row: _keep(reports, m, client.predict(n, r, model=m)[0]))
        console.print(table)
        console.print("[bold]What the orchestrators reported (steps, targets, deadlines):[/bold]")
        for model, report in reports:
            console.print(f"  {model}: {_summary(report)}")
        console.print("[bold]Bad input gets a clear error and the server keeps serving:[/bold]")
        for call, fn in (
            ("web_single([5.1, 3.5, 45.0, 0.2])", lambda: client.web_single([5.1, 3.5, 45.0, 0.2])),
            ("prep_pred(b'not an image', form='bls')", lambda: client.prep_pred(b"not an image", form="bls")),
            ("serial('')", lambda: client.serial("")),
        ):
            try:
                fn()
                console.print(f"  {call}: [red]accepted (expected an error)[/red]")
                ok = False
            except PatternError as exc:
                console.print(f"  {call}: [yellow]{exc}[/yellow]")
    return ok


@contextlib.contextmanager
def async_workers(grpc_url: str, redis_url: str, count: int = 2) -> Iterator[list]:
    """`count` worker processes of the asynchronous pattern (logs under build/logs), yielded once
    they are consumers of the queue; stopped by pid with SIGTERM, so each finishes its job in hand."""
    from pattern_jobs.async_worker import start_workers
    from pattern_runtime import paths

    workers = start_workers([f"demo-worker-{i}" for i in range(count)], grpc_url, redis_url,
                            paths.BUILD / "logs", "--idle-timeout-ms", "1000")
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate(timeout=20)


def _job_row(table: Table, pattern: str, given: str, expected: str, fn: Callable) -> bool:
    """One job: `fn()` returns its JobResult; the row shows its end, attempts and timings."""
    try:
        r = fn()
    except PatternError as exc:
        table.add_row(pattern, given, "-", "-", f"[red]error: {exc}[/red]", expected, "-")
        return False
    ok = (r.label if r.status == "done" else r.status) == expected
    mark = "[green]ok[/green]" if ok else "[red]WRONG[/red]"
    shown = f"{r.label} (p={float(np.max(r.scores)):.3f})" if r.status == "done" else r.status
    split = "/".join(f"{r.timings[k]:.0f}" for k in ("queue_ms", "infer_ms") if k in r.timings)
    table.add_row(pattern, given, r.model, r.model_version or "-", f"{shown} {mark}", expected,
                  f"{r.timings.get('total_ms', 0):.1f}", str(r.attempts), split)
    return ok


def run_async_patterns(url: str, grpc_url: str, redis_url: str) -> bool:
    """Asynchronous and time-difference patterns, with two workers started (and stopped) here."""
    table = Table(title="Asynchronous and time-difference patterns (jobs through Redis Streams + workers)")
    for column in ("pattern", "input", "model", "version", "output", "expected", "ms", "tries", "queue/infer ms"):
        table.add_column(column)
    ok = True
    with PatternClient(url) as client, async_workers(grpc_url, redis_url) as workers:
        console.print(f"async workers started: pids {', '.join(str(w.pid) for w in workers)}")
        started = time.perf_counter()
        jobs = [(f, s, client.submit(f)) for f, s in IRIS_SAMPLES]
        text, topic = TEXT_SAMPLES[3]
        text_job = client.submit(text, model="text_async_submit")
        poison = client.submit(IRIS_SAMPLES[0][0], target="iris_failing")
        console.print(f"submitted {len(jobs) + 2} jobs in {(time.perf_counter() - started) * 1000:.1f} ms "
                      "(each returned its job id at once)")
        for features, species, job_id in jobs:
            ok &= _job_row(table, "async (iris v2)", str(features), species,
                           lambda j=job_id: client.wait(j, 30, redis_url))
        ok &= _job_row(table, "async (text pipeline)", text[:30] + "...", topic,
                       lambda: client.wait(text_job, 30, redis_url))
        ok &= _job_row(table, "async (poison job)", "target iris_failing", "failed",
                       lambda: client.wait(poison, 30, redis_url))
        poison_error = client.result(poison).error
        key = f"demo-{uuid.uuid4().hex[:12]}"  # a client's retry after a timeout: the same key, one job
        first, retried = (client.submit(IRIS_SAMPLES[1][0], idempotency_key=key) for _ in range(2))
        ok &= first == retried
        console.print(f"idempotency key {key}: submitted twice, answered {first[:8]} and {retried[:8]}: "
                      f"{'one job' if first == retried else 'TWO JOBS (wrong)'}")
        features, species = IRIS_SAMPLES[2]
        fast = client.time_difference(features)
        state_then = client.result(fast.job_id).status
        ok &= _row(table, "time_difference (fast)", str(features), species, lambda: fast)
        ok &= _job_row(table, f"time_difference (slow job, {state_then} then)", f"job {fast.job_id[:8]}", species,
                       lambda: client.wait(fast.job_id, 30, redis_url))
        with PatternClient(grpc_url, protocol="grpc") as grpc:
            for p in grpc.time_difference_stream(features):
                stage = np.asarray(p.outputs["STAGE"]).reshape(-1)[0].decode()
                ok &= _row(table, f"time_difference stream ({stage})", str(features), species, lambda p=p: p)
    console.print(table)
    console.print(f"the poison job's last error, also in the dead-letter stream async:dead: {poison_error}")
    console.print("workers stopped (SIGTERM by pid)")
    return ok


def run_rollouts(url: str, redis_url: str | None = None) -> bool:
    """Rollouts through the router backend: canary split, A/B arms, shadow, condition routing."""
    from collections import Counter

    table = Table(title="Rollouts between model versions (backends/router)")
    for column in ("pattern", "model", "what was sent", "what happened", "check"):
        table.add_column(column)
    ok = True

    def row(pattern: str, model: str, sent: str, happened: str, good: bool) -> None:
        nonlocal ok
        ok &= good
        table.add_row(pattern, model, sent, happened, "[green]ok[/green]" if good else "[red]WRONG[/red]")

    features, species = IRIS_SAMPLES[2]
    with PatternClient(url) as client:
        try:
            canary = Counter(client.canary(features, user_id=f"demo-user-{i}").arm for i in range(200))
            row("canary (90/10)", "iris_canary", "200 users (user_id)",
                ", ".join(f"{a}: {n}" for a, n in canary.items()),
                10 <= canary["canary"] <= 40)
            arms = {u: client.ab_test(features, user_id=u).arm for u in ("alice", "bob", "carol", "dave")}
            again = {u: client.ab_test(features, user_id=u).arm for u in arms}
            row("A/B (50/50, sticky)", "iris_ab", "4 users, twice each",
                ", ".join(f"{u}: {a}" for u, a in arms.items()),
                arms == again)
            shadowed = client.shadow(features)
            row("shadow", "iris_shadow", str(features), f"{shadowed.label} from {shadowed.target} "
                f"({shadowed.latency_ms:.1f} ms); iris:2 called in the background", shadowed.label == species)
            start = time.perf_counter()
            slow = client.shadow(features, model="iris_shadow_slow")
            waited = (time.perf_counter() - start) * 1000
            row("shadow, slow candidate", "iris_shadow_slow", str(features),
                f"{slow.label} in {waited:.1f} ms (the candidate takes 1.5 s)", waited < 1000)
            for target, value in ((None, IRIS_SAMPLES[0][0]), (None, features), ("v1", features)):
                routed = client.route(value, target=target)
                sent = f"{value}" + (f", target={target}" if target else "")
                expected = "iris:1" if target == "v1" or value[2] < 2.5 else "iris:2"
                row("condition", "iris_route", sent, f"{routed.label} from {routed.target}", routed.target == expected)
            live = client.predict("blue_green", features)[0]
            row("blue-green entry", "iris_live", str(features), f"{live.label} from {live.target}",
                live.label == species)
        except PatternError as exc:
            table.add_row("rollouts", "-", "-", f"[red]error: {exc}[/red]", "[red]WRONG[/red]")
            ok = False
    console.print(table)
    if redis_url:
        import redis

        from pattern_jobs.rollouts import shadow_entries

        with contextlib.closing(redis.Redis.from_url(redis_url)) as r:
            for entry in shadow_entries(r, "shadow:iris_shadow", 1):
                console.print(f"newest shadow comparison in Redis stream shadow:iris_shadow: {entry['result']}, "
                              f"primary {entry['primary']} {entry.get('primary_output', {}).get('LABEL')} "
                              f"({entry['primary_ms']} ms), candidate {entry['candidate']} "
                              f"{entry.get('candidate_output', {}).get('LABEL')} ({entry.get('candidate_ms')} ms)")
    return ok


def run_bluegreen() -> bool:
    """A blue-green release of iris v1 -> v2 on a server started in explicit model-control mode,
    under load on its router iris_live (triton-patterns bluegreen without --url)."""
    from pattern_jobs.bluegreen import run_local

    console.print("[bold]Blue-green release (explicit model-control mode, 2 clients of load on iris_live):[/bold]")
    release, traffic = run_local(2)
    console.print(f"  {traffic.summary()}")
    return release.ok and not traffic.errors


def run_breaker_and_monitoring(url: str, metrics_url: str, redis_url: str) -> bool:
    """Circuit breaker over a target failed and healed through its Redis fault switch, load
    shedding on the guarded heavy model, the breaker's metrics, and the drift monitor on the
    prediction log (unshifted, then shifted inputs)."""
    import asyncio
    from collections import Counter

    import redis
    import tritonclient.http.aio as http_aio

    from pattern_jobs import drift
    from pattern_kernel.prediction_log import stream_name
    from pattern_tools.monitoring import scrape, value
    from triton_patterns.client import AsyncPatternClient

    table = Table(title="Circuit breaker and fallback (iris_breaker over iris_flaky; heavy_breaker)")
    for column in ("step", "answer", "fallback (reason)", "ms", "breaker state"):
        table.add_column(column)
    states = {0: "closed", 1: "half-open", 2: "open"}
    features, species = IRIS_SAMPLES[2]
    ok = True
    with PatternClient(url) as client, contextlib.closing(redis.Redis.from_url(redis_url)) as r:

        def call(step: str, expect_fallback: bool) -> Prediction:
            nonlocal ok
            p = client.circuit_breaker(features)
            state = value(scrape(metrics_url), "circuit_breaker_state", model="iris_breaker")
            good = p.fallback == expect_fallback and (p.label == species or p.fallback)
            ok &= good
            table.add_row(step, p.label, f"{p.fallback} ({p.fallback_reason or '-'})", f"{p.latency_ms:.1f}",
                          states.get(state, "?") + ("" if good else " [red]WRONG[/red]"))
            return p

        call("target healthy", False)
        r.set("fault:iris_flaky", "fail")
        for i in range(4):
            call(f"target failing ({i + 1})", True)
        r.delete("fault:iris_flaky")
        time.sleep(2.2)  # cool_down_ms 2000: the next call is the half-open probe
        call("target recovered, after the cool-down", False)
        console.print(table)

        async def burst(n: int = 48):
            rows = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
            async with AsyncPatternClient(url) as pc:
                async def one():
                    tensor = http_aio.InferInput("INPUT", list(rows.shape), "FP32")
                    tensor.set_data_from_numpy(rows)
                    result = await pc.client.infer("heavy_breaker", [tensor])
                    return result.as_numpy("FALLBACK_REASON")[0, 0].decode() or "answered"
                return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

        outcomes = Counter(o if isinstance(o, str) else "error" for o in asyncio.run(burst()))
        ok &= "error" not in outcomes
        console.print(f"heavy_breaker, 48 concurrent requests of 8 rows over heavy_mlp_guarded (queue of 4, "
                      f"the breaker's calls rejected after 250 ms in it): {dict(outcomes)}")
        samples = scrape(metrics_url)
        console.print("fallbacks counted (pattern_fallbacks_total): " + ", ".join(
            f"{s.labels['model']} {s.labels['reason']}={s.value:g}" for s in samples
            if s.name == "pattern_fallbacks_total" and s.value and s.labels.get("pattern") == "circuit_breaker"))

        from pattern_runtime.datasets.iris import load_split

        X = np.vstack(load_split()[:2]).astype(np.float32)
        for label, rows in (("unshifted iris rows", X), ("petal length + 1.5 cm", X + [0, 0, 1.5, 0])):
            r.delete(stream_name("iris_breaker"))
            for start in range(0, len(rows), 50):
                client.predict("circuit_breaker", rows[start:start + 50].astype(np.float32))
            report = drift.check(r, "iris_breaker")
            ok &= report["drift"] == (label != "unshifted iris rows")
            console.print(f"[bold]drift monitor, {label}:[/bold]\n{drift.format_report(report)}")
    return ok


def show_models(url: str) -> None:
    with PatternClient(url) as client:
        models = client.models()
    table = Table(title="Model repository")
    for column in ("model", "version", "state"):
        table.add_column(column)
    for m in models:
        table.add_row(m.name, m.version, m.state)
    console.print(table)


def main(url: str | None = None) -> int:
    start = time.perf_counter()
    if url:
        show_models(url)
        ok = run_patterns(url)
        ok &= run_rollouts(url)
        console.print("(asynchronous patterns skipped with --url: they need Redis, the gRPC address and "
                      "workers; see docs/patterns/asynchronous.md)")
    else:
        with running_stack() as (triton, redis):
            console.print(f"tritonserver's Python stubs run {triton.stub_python} "
                          "(the server virtualenv: the kernel only)")
            show_models(triton.http_url)
            ok = run_patterns(triton.http_url)
            ok &= run_async_patterns(triton.http_url, triton.grpc_url, redis.url)
            ok &= run_rollouts(triton.http_url, redis.url)
            ok &= run_breaker_and_monitoring(triton.http_url, triton.metrics_url, redis.url)
        console.print("stopped tritonserver and Redis")
        ok &= run_bluegreen()
    verdict = "[green]all answers correct[/green]" if ok else "[red]some answers were wrong[/red]"
    console.print(f"demo finished in {time.perf_counter() - start:.1f} s: {verdict}")
    return 0 if ok else 1
