"""End-to-end: rollouts through the router backend (canary split and weights changed at run time,
A/B arms, shadow, condition routing) on the session server (the canary split, the shadow log and
condition routing also on the container stack: `container`), and blue-green releases under load
on a server of their own in explicit model-control mode."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request

import numpy as np
import pytest
import redis

from pattern_jobs.bluegreen import BlueGreen, Traffic, heldout_set
from pattern_jobs.rollouts import shadow_entries
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.processes import wait_for
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.cli import main as cli_main
from triton_patterns.client import PatternClient, PatternError

pytestmark = pytest.mark.e2e

ROW = [6.7, 3.0, 5.2, 2.3]          # virginica; petal length 5.2: iris_route's default arm
SETOSA = [5.1, 3.5, 1.4, 0.2]       # petal length 1.4 < 2.5: iris_route's rule sends it to v1


def metric(triton, name: str, **labels: str) -> float:
    """Sum of a metric's samples on the metrics port whose labels include `labels`."""
    text = urllib.request.urlopen(triton.metrics_url, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def entry_for(redis_url: str, stream: str, row, timeout: float = 30.0) -> dict:
    """The stream's comparison whose input is `row` (waits for the candidate's answer)."""
    found: list[dict] = []

    def seen() -> bool:
        with redis.Redis.from_url(redis_url) as r:
            entries = shadow_entries(r, stream, count=1000)
        found[:] = [e for e in entries
                    if np.allclose(e["input"]["FEATURES"], [row]) and "candidate_output" in e]
        return bool(found)

    assert wait_for(seen, timeout, interval=0.2), f"no comparison of {row} in {stream} within {timeout:.0f} s"
    return found[0]  # the newest


@pytest.mark.container
def test_canary_split_is_measured_within_tolerance_and_users_keep_their_arm(client):
    users = [f"user-{i}" for i in range(600)]
    arms = {u: client.canary(ROW, user_id=u) for u in users}
    canary = sum(p.arm == "canary" for p in arms.values())
    assert 30 <= canary <= 90, f"{canary} of 600 users on the 10% canary (expected 60, sd 7.3)"
    assert {(p.arm, p.target) for p in arms.values()} == {("stable", "iris:1"), ("canary", "iris:2")}
    for u in users[:60]:
        assert client.canary(ROW, user_id=u).arm == arms[u].arm, "a user moved to another arm"
    anonymous = sum(client.canary(ROW).arm == "canary" for _ in range(400))
    assert 16 <= anonymous <= 64, f"{anonymous} of 400 requests without user_id on the canary (expected 40)"


def test_ab_arms_are_sticky_reported_and_counted_per_arm(client, triton):
    before = {arm: metric(triton, "router_requests_total", model="iris_ab", arm=arm) for arm in "AB"}
    seen = {}
    for i in range(200):
        user = f"ab-user-{i}"
        first, second = client.ab_test(ROW, user_id=user), client.ab_test(ROW, user_id=user)
        assert first.arm == second.arm
        assert first.target == {"A": "iris:1", "B": "iris:2"}[first.arm]
        seen[user] = first.arm
    counts = {arm: 2 * sum(a == arm for a in seen.values()) for arm in "AB"}
    assert 70 <= counts["A"] / 2 <= 130, counts  # 50/50 of 200 users: 100, sd 7
    assert wait_for(lambda: all(metric(triton, "router_requests_total", model="iris_ab", arm=arm) - before[arm]
                                == counts[arm] for arm in "AB"), 10), "router_requests_total{arm} counts every answer"


@pytest.mark.container
def test_shadow_returns_the_primary_answer_and_logs_both_outputs(client, target):
    for row in (ROW, SETOSA, [6.0, 2.7, 5.1, 1.6]):
        shadowed = client.shadow(row)
        v1, v2 = client.synchronous(row, version=1), client.synchronous(row, version=2)
        assert (shadowed.arm, shadowed.target) == ("primary", "iris:1")
        assert shadowed.class_id == v1.class_id and np.abs(shadowed.scores - v1.scores).max() < 1e-6
        entry = entry_for(target.redis_url, "shadow:iris_shadow", row)
        assert (entry["primary"], entry["candidate"]) == ("iris:1", "iris:2")
        assert entry["primary_output"]["LABEL"] == [[v1.class_id]]
        assert np.allclose(entry["candidate_output"]["PROBABILITIES"], [v2.scores], atol=1e-6)
        assert entry["result"] == ("agree" if v1.class_id == v2.class_id else "disagree")
        time.sleep(0.1)  # at most 2 mirrored calls at once: let this one finish


def test_shadow_never_waits_for_a_slow_candidate(client, redis_server, triton):
    row = [5.9, 3.0, 5.1, 1.8]
    client.shadow(SETOSA, model="iris_shadow_slow")  # first call of the model: start-up out of the timing
    start = time.perf_counter()
    p = client.shadow(row, model="iris_shadow_slow")
    elapsed = time.perf_counter() - start
    assert p.target == "iris:1" and p.class_id == client.synchronous(row, version=1).class_id
    assert elapsed < 1.5, f"the answer took {elapsed:.2f} s: it waited for the 1.5 s candidate"
    entry = entry_for(redis_server.url, "shadow:iris_shadow_slow", row, timeout=60)
    assert entry["candidate_ms"] >= 1500 and entry["primary_ms"] < 1000
    assert entry["result"] in ("agree", "disagree") and "LABEL" in entry["primary_output"]
    assert wait_for(lambda: metric(triton, "shadow_comparisons_total", model="iris_shadow_slow",
                                   result=entry["result"]) >= 1, 10)


@pytest.mark.container
def test_condition_routing_by_parameter_rule_and_default(client):
    assert client.route(ROW, target="v1").target == "iris:1"
    assert client.route(ROW, target="v2").target == "iris:2"
    assert client.route(SETOSA).target == "iris:1"   # rule FEATURES[2] < 2.5 -> v1
    assert client.route(ROW).target == "iris:2"      # default arm
    rows = [SETOSA, ROW, [4.9, 3.0, 1.4, 0.2], [6.0, 2.7, 5.1, 1.6]]
    mixed = client.predict("route", rows)            # one request, rows split between the arms
    assert [p.target for p in mixed] == ["iris:1", "iris:2", "iris:1", "iris:2"]
    for row, p in zip(rows, mixed, strict=True):
        direct = client.synchronous(row, version=int(p.target[-1]))
        assert p.class_id == direct.class_id and np.abs(p.scores - direct.scores).max() < 1e-6
    with pytest.raises(PatternError) as err:
        client.route(ROW, target="plants")
    assert "must be one of ['v1', 'v2']" in str(err.value) and err.value.status == "400"


def test_weights_change_without_restart(client, triton, redis_server, capsys):
    users = [f"weights-user-{i}" for i in range(30)]
    baseline = {u: client.canary(ROW, user_id=u).arm for u in users}
    options = ["--url", triton.http_url, "--redis", redis_server.url]
    try:
        assert cli_main(["weights", "iris_canary", "stable=0", "canary=100", *options]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["weights"] == {"stable": 0.0, "canary": 100.0} and shown["source"].startswith("Redis key")
        assert wait_for(lambda: all(client.canary(ROW, user_id=u).arm == "canary" for u in users), 20), \
            "the router did not pick up the new weights"
        assert all(client.canary(ROW).arm == "canary" for _ in range(30))
        assert wait_for(lambda: metric(triton, "router_weight", model="iris_canary", arm="canary") == 100, 10)
    finally:
        assert cli_main(["weights", "iris_canary", "--reset", *options]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "config"
    assert wait_for(lambda: {u: client.canary(ROW, user_id=u).arm for u in users} == baseline, 20), \
        "back on the config's weights, every user is on their former arm"


# -- blue-green, on a server of its own (explicit model-control mode)


def _bad_model(root):
    """An iris 'version 3' trained on shuffled labels, with a manifest recording its accuracy."""
    from sklearn.linear_model import LogisticRegression

    from export.manifest import ort_session, sklearn_to_onnx
    from pattern_runtime.datasets.iris import load_split

    x_train, x_test, y_train, y_test, _ = load_split()
    model = LogisticRegression(max_iter=1000).fit(x_train, np.random.default_rng(0).permutation(y_train))
    data = sklearn_to_onnx(model, "iris_v3_bad", "FEATURES", 4, 3, "iris v3: trained on shuffled labels")
    labels = ort_session(data).run(["LABEL"], {"FEATURES": x_test.astype(np.float32)})[0]
    accuracy = float(np.mean(labels == y_test))
    assert accuracy < 0.8
    (root / "3").mkdir()
    (root / "3" / "model.onnx").write_bytes(data)
    (root / "3" / "manifest.json").write_text(json.dumps({"model": "iris", "version": 3,
                                                          "heldout": {"accuracy": accuracy, "n": len(y_test)}}))


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    """iris (versions 1, 2 and a bad 3 on disk; version 1 loaded) and iris_live -> iris:1."""
    repo = tmp_path_factory.mktemp("bluegreen") / "repository"
    source = paths.MODEL_REPOSITORY
    for version in ("1", "2"):
        shutil.copytree(source / "iris" / version, repo / "iris" / version)
    shutil.copy(source / "iris" / "labels.txt", repo / "iris" / "labels.txt")
    config = (source / "iris" / "config.pbtxt").read_text()
    assert "versions: [ 1, 2 ]" in config
    (repo / "iris" / "config.pbtxt").write_text(config.replace("versions: [ 1, 2 ]", "versions: [ 1 ]"))
    _bad_model(repo / "iris")
    shutil.copytree(source / "iris_live", repo / "iris_live")
    with TritonServer(ServerSettings(model_repository=repo, model_control_mode="explicit",
                                     load_models=["iris", "iris_live"],
                                     cache_size_bytes=None)) as server:
        server.wait_ready_models(["iris", "iris_live"])
        yield server, repo


def test_bluegreen_failing_gate_leaves_the_old_version_serving(explicit_server):
    server, repo = explicit_server
    bluegreen = BlueGreen(server.http_url, repository=repo)
    x, _ = heldout_set("iris")
    with Traffic(server.http_url, "iris_live", x) as traffic:
        time.sleep(0.3)
        release = bluegreen.run(3, warmup=5)
        time.sleep(0.3)
    assert not release.ok
    assert [(s.name, s.ok) for s in release.steps] == [
        ("load", True), ("warm up", True), ("check", False), ("roll back", True)]
    assert "accuracy gate failed" in release.steps[2].detail and "worse than the old" in release.steps[2].detail
    assert release.accuracy["3"]["measured"] < 0.8 <= release.accuracy["1"]["measured"]
    assert traffic.errors == [] and traffic.ok > 0 and set(traffic.targets) == {"iris:1"}
    assert bluegreen.ready(1) and not bluegreen.ready(3) and not bluegreen.ready(2)
    assert bluegreen.router_target() == ("iris", 1)
    bluegreen.close()


def test_bluegreen_switch_under_load_with_zero_failed_requests(explicit_server, capsys):
    server, repo = explicit_server
    x, _ = heldout_set("iris")
    with Traffic(server.http_url, "iris_live", x, threads=3) as traffic:
        time.sleep(0.5)
        code = cli_main(["bluegreen", "--to", "2", "--url", server.http_url, "--repository", str(repo),
                         "--warmup", "10", "--json"])
        time.sleep(0.5)
    release = json.loads(capsys.readouterr().out)
    assert code == 0 and release["ok"], release
    assert [s["name"] for s in release["steps"]] == ["load", "warm up", "check", "switch", "drain", "unload"]
    assert traffic.errors == [], f"{len(traffic.errors)} failed requests, e.g. {traffic.errors[:3]}"
    assert traffic.targets["iris:1"] > 0 and traffic.targets["iris:2"] > 0, traffic.summary()
    bluegreen = BlueGreen(server.http_url, repository=repo)
    assert bluegreen.ready(2) and not bluegreen.ready(1) and bluegreen.router_target() == ("iris", 2)
    bluegreen.close()
    with PatternClient(server.http_url) as client:
        answers = client.predict("blue_green", x[:10])
    assert {p.target for p in answers} == {"iris:2"}
