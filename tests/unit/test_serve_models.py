"""`serve` loads every model but the extra ones, which nothing it serves or the demo calls."""

from __future__ import annotations

import re

from pattern_runtime import paths
from pattern_runtime.serve_models import EXTRA_MODELS, default_serve_models, repository_models
from pattern_tools import cli


def test_serve_loads_every_model_but_the_extra_ones_unless_asked_for_all():
    every = repository_models()
    assert set(EXTRA_MODELS) <= set(every)
    assert default_serve_models() == [m for m in every if m not in EXTRA_MODELS]
    assert cli.parser().parse_args(["serve"]).all_models is False
    assert cli.parser().parse_args(["serve", "--all-models"]).all_models is True


def test_no_served_model_and_no_demo_call_needs_an_extra_model():
    demo_source = (paths.PROJECT_ROOT / "tools" / "pattern_tools" / "demo.py").read_text()
    for extra in EXTRA_MODELS:
        named = re.compile(rf"\b{extra}\b(?!_)")
        for model in default_serve_models():
            config = (paths.model_folder(model) / "config.pbtxt").read_text()
            code = "\n".join(line.split("#", 1)[0] for line in config.splitlines())  # comments aside
            assert not named.search(code), f"{model} names {extra}"
        assert not named.search(demo_source), f"the demo calls {extra}"
