"""The project's two model repositories: `model_repository/` (what the images carry) calls no model
outside itself, `model_repository_test/` (tests, the demo, benchmarks) only adds to it, and every
tool that names the repository serves, checks or exports both (docs/architecture.md, "Two model
repositories")."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from export import manifest as mf
from export.__main__ import all_specs, output_repository
from pattern_runtime import paths
from pattern_runtime.launcher import TritonServer
from pattern_runtime.serve_models import repository_models
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.cli import main as cli_main
from pattern_tools.repo_check import check_repository

BENCHMARK_MODELS = {"heavy_mlp", "heavy_mlp_guarded", "heavy_breaker"}


def models(repository: Path) -> set[str]:
    return set(repository_models(repository))


def test_the_deployed_repository_calls_no_model_outside_itself():
    report = check_repository(paths.MODEL_REPOSITORY, paths.BACKENDS, files=False)
    assert report.errors == [], "\n".join(report.lines())
    calls = {callee for name in report.models for callee in report.dependencies(name)}
    assert calls <= models(paths.MODEL_REPOSITORY)


def test_the_test_repository_only_adds_models_and_holds_the_benchmark_ones():
    deployed, test_only = models(paths.MODEL_REPOSITORY), models(paths.TEST_MODEL_REPOSITORY)
    assert deployed and test_only and not deployed & test_only
    assert BENCHMARK_MODELS <= test_only
    report = check_repository(paths.MODEL_REPOSITORIES, paths.BACKENDS, files=False)
    assert report.errors == [], "\n".join(report.lines())
    assert set(report.models) == deployed | test_only


def test_the_images_and_compose_carry_the_deployed_repository_only():
    dockerfile = (paths.PROJECT_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    copies = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert "model_repository/" in copies and not any("model_repository_test" in c for c in copies)
    allowed = (paths.PROJECT_ROOT / ".dockerignore").read_text().split()
    assert "!model_repository" in allowed and not any("model_repository_test" in a for a in allowed)
    compose = yaml.safe_load((paths.PROJECT_ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    mounts = [v for s in compose["services"].values() for v in s.get("volumes", []) if ":/models" in str(v)]
    assert mounts and all(v.split(":")[0].endswith("/model_repository") for v in mounts), mounts


def test_the_launcher_serves_every_repository_it_is_given(tmp_path):
    default = TritonServer(ServerSettings(project_backends=tmp_path)).command()
    assert [a for a in default if a.startswith("--model-repository=")] == [
        f"--model-repository={r.resolve()}" for r in paths.MODEL_REPOSITORIES]
    one = TritonServer(ServerSettings(model_repository=tmp_path, project_backends=tmp_path))
    assert [a for a in one.command() if a.startswith("--model-repository=")] == [f"--model-repository={tmp_path}"]
    assert one.model_repositories == [tmp_path] and one.model_repository == tmp_path
    assert set(TritonServer(ServerSettings(project_backends=tmp_path)).start_models()) == \
        models(paths.MODEL_REPOSITORY) | models(paths.TEST_MODEL_REPOSITORY)


def test_check_names_a_model_that_is_in_two_repositories(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        shutil.copytree(paths.MODEL_REPOSITORY / "iris", root / "iris",
                        ignore=shutil.ignore_patterns("*.onnx", "*.json"))
    code = cli_main(["check", "--no-files", "--repository", str(first), "--repository", str(second)])
    out = capsys.readouterr().out
    assert code == 1
    assert "error: b/iris/config.pbtxt: name: model iris is in more than one repository" in out, out


def test_export_writes_the_benchmark_family_into_the_test_repository():
    repo = mf.DEFAULT_REPOSITORY
    where = {spec.name: output_repository(spec, repo) for spec in all_specs(repo)}
    assert mf.test_repository(repo) == paths.TEST_MODEL_REPOSITORY.resolve()
    assert {name for name, folder in where.items() if folder == paths.TEST_MODEL_REPOSITORY.resolve()} == \
        BENCHMARK_MODELS - {"heavy_breaker"}  # heavy_breaker is a config only: nothing to export
    assert where["iris"] == repo and where["text_encoder"] == repo
