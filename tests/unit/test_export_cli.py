"""`python -m export`'s command line: --only, --force and the summary table (model, version,
status, size, parity error, headline metric, time), also after a failed export."""

from __future__ import annotations

import dataclasses

from export import __main__ as cli
from export import manifest as mf
from export.__main__ import headline_metric, main
from export.report import format_table, human_size


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out[out.index("model "):].splitlines()
    return {line.split()[0] + " v" + line.split()[1]: line.split() for line in lines[2:] if line.strip()
            and not line.startswith(("done:", "edge "))}


def test_summary_table_only_and_force(tmp_path, capsys):
    assert main(["--only", "iris", "--repository", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["model", "version", "status", "size", "parity", "err", "metric", "time"]
               for line in out.splitlines())
    rows = table_rows(out)  # model, version, status, size (2 words), parity error, metric (2 words), time
    assert sorted(rows) == ["iris v1", "iris v2", "iris_web_single v1"]
    assert rows["iris v1"][2] == "exported" and rows["iris v1"][4] == "kB"
    assert float(rows["iris v1"][5]) < 1e-5 and rows["iris v1"][6:8] == ["test_accuracy", "0.978"]
    assert main(["--only", "iris_web_single", "--repository", str(tmp_path)]) == 0
    assert {r[2] for r in table_rows(capsys.readouterr().out).values()} == {"skipped"}
    assert main(["--only", "iris_web_single", "--force", "--repository", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["iris_web_single v1"][2] == "exported" and rows["iris v2"][2] == "skipped"  # forced: the named one


def test_failed_export_still_prints_what_finished(tmp_path, capsys, monkeypatch):
    real = cli.all_specs

    def failing(repo):
        specs = [s for s in real(repo) if s.family == "iris"]

        def boom(log):
            raise mf.ParityError("iris v2: parity check against sklearn failed: made up")

        return [dataclasses.replace(s, build=boom) if s.label == "iris v2" else s for s in specs]

    monkeypatch.setattr(cli, "all_specs", failing)
    assert main(["--only", "iris", "--repository", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert list(table_rows(captured.out)) == ["iris v1"] and "export failed: iris v2: parity" in captured.err


def test_headline_metric_and_formatting():
    assert headline_metric({"n_test": 450, "test_accuracy": 0.97333}) == "test_accuracy 0.973"
    assert headline_metric({"embedding_dim": 384}) == "embedding_dim 384"
    assert headline_metric({"note": "x"}) == "-"
    assert human_size(21142) == "21.1 kB" and human_size(90394254) == "90.4 MB" and human_size(None) == "-"
    assert format_table(["a", "bb"], [["xyz", "1"]]) == "a    bb\n---  --\nxyz  1"
