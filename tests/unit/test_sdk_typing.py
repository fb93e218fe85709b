"""A type checker (mypy, pinned in requirements.txt, run in this process through `mypy.api`) sees
the SDK's pattern methods and Prediction's attributes: code that uses them right checks clean, a
wrong keyword, a missing argument or an unknown attribute is an error naming it."""

from __future__ import annotations

import textwrap

import mypy.api as mypy_api
import pytest

from pattern_runtime import paths

GOOD = """
    from __future__ import annotations

    from triton_patterns import AsyncPatternClient, PatternClient, Prediction


    def use(client: PatternClient) -> tuple[str | None, bool | None, list[Prediction]]:
        p = client.canary([6.7, 3.0, 5.2, 2.3], user_id="u1")
        client.prep_pred(b"png", form="bls")
        client.synchronous([1.0, 2.0, 3.0, 4.0], version=2)
        return p.arm, client.prediction_cache("a text").cache_hit, client.time_difference_stream([1.0])


    async def use_async(client: AsyncPatternClient) -> str:
        p = await client.route([1.0, 2.0, 3.0, 4.0], target="v1")
        return p.label
"""
BAD = """
    from triton_patterns import PatternClient

    client = PatternClient()
    client.canary([6.7, 3.0, 5.2, 2.3], usr_id="u1")
    client.serial()
    client.shadow([1.0]).armm
    client.no_such_pattern([1.0])
"""


def _mypy(tmp_path, source: str) -> tuple[str, int]:
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent(source))
    out, err, status = mypy_api.run([
        str(user), "--python-version", "3.10", "--strict", "--follow-imports", "silent", "--no-incremental",
        "--cache-dir", str(tmp_path / "cache"), "--config-file", "/dev/null",
    ])
    return out + err, status


@pytest.fixture
def sdk_on_path(monkeypatch):
    monkeypatch.setenv("MYPYPATH", str(paths.PROJECT_ROOT / "clients"))


def test_code_that_uses_the_methods_right_checks_clean(tmp_path, sdk_on_path):
    out, status = _mypy(tmp_path, GOOD)
    assert status == 0, out


def test_a_wrong_keyword_a_missing_argument_and_an_unknown_attribute_are_errors(tmp_path, sdk_on_path):
    out, status = _mypy(tmp_path, BAD)
    assert status == 1
    assert 'user.py:5: error: Unexpected keyword argument "usr_id" for "canary" of "PatternMethods"' in out
    assert 'user.py:6: error: Missing positional argument "text" in call to "serial" of "PatternMethods"' in out
    assert 'user.py:7: error: "Prediction" has no attribute "armm"' in out
    assert 'user.py:8: error: "PatternClient" has no attribute "no_such_pattern"' in out
