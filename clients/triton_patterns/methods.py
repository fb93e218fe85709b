"""The clients' per-pattern methods, from the pattern table (patterns.py).

One `PatternMethod` per method name of the table (entries sharing a name are its `form`s): its
signature and docstring, from which `python -m pattern_tools.sdk_gen` writes `PatternClient`'s
plain method and `AsyncPatternClient`'s coroutine of that name into pattern_methods.py. A call
binds its arguments to that signature (`call`, `acall`) and becomes one `predict` (or, for a
stream, one `_stream`) call of the client: options are the model's version, the model's name, a
request parameter, or the stream's deadline.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from triton_patterns.patterns import PATTERNS, RESULT_FIELDS, STREAMS, PatternSpec


@dataclass(frozen=True)
class Option:
    """A per-call option: its annotation, its default, and where its value goes: "version",
    "model" and "timeout_s" are arguments of the client's call, "parameter" a request parameter
    (sent unless None or empty)."""

    annotation: Any
    default: Any
    goes_to: str


# annotations are strings, as `from __future__ import annotations` writes them in client.py
OPTIONS: dict[str, Option] = {
    "version": Option("int | None", None, "version"),
    "user_id": Option("str | None", None, "parameter"),
    "target": Option("str | None", None, "parameter"),
    "model": Option("str", None, "model"),  # default: the entry's model
    "timeout_s": Option("float", 30.0, "timeout_s"),
}

# the value's parameter by the model's input tensor: its name and annotation
VALUES: dict[str, tuple[str, str]] = {
    "FEATURES": ("features", "Sequence[float]"),
    "IMAGE": ("image", "bytes"),
    "TEXT": ("text", "str"),
    "ID": ("record_id", "str"),
}


class PatternMethod:
    """One method of both clients, from the table entries that share its name."""

    def __init__(self, name: str, specs: Sequence[PatternSpec]):
        self.name, self.specs = name, {spec.form: spec for spec in specs}
        first = specs[0]
        if any((s.options, s.input, s.answers) != (first.options, first.input, first.answers) for s in specs):
            raise ValueError(f"the forms of {name} differ in their input or options")
        self.first, self.stream = first, first.answers > 1
        value, annotation = VALUES[first.input]
        parameters = [inspect.Parameter(value, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)]
        if len(specs) > 1:
            parameters.append(_parameter("form", "str", first.form))
        for name in first.options:
            option = OPTIONS[name]
            parameters.append(_parameter(name, option.annotation, first.model if name == "model" else option.default))
        returns = "list[Prediction]" if self.stream else "Prediction"
        self.signature = inspect.Signature(parameters, return_annotation=returns)
        self.doc = _docstring(first, specs)

    def request(self, *args: Any, **kwargs: Any) -> tuple[PatternSpec, dict[str, Any]]:
        """The entry a call picks and the keyword arguments of the client call it becomes."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        form = values.pop("form", self.first.form)
        if form not in self.specs:
            raise ValueError(f"{self.name}: form must be one of {', '.join(map(repr, self.specs))}, got {form!r}")
        spec = self.specs[form]
        if values.get("model") == self.first.model:
            # the signature's default (the first form's model; the written-out methods pass every
            # argument): the picked form's own model
            values["model"] = spec.model
        call: dict[str, Any] = {"value": values.pop(VALUES[spec.input][0])}
        parameters = {}
        for option, value in values.items():
            goes_to = OPTIONS[option].goes_to
            if goes_to != "parameter":
                call[goes_to] = value
            elif value is not None and value != "":
                parameters[option] = str(value)
        if not self.stream:
            call["parameters"] = parameters or None
        return spec, call


def call(method: PatternMethod, client: Any, *args: Any) -> Any:
    """A blocking pattern method's call on `client`: one Prediction (a stream: its list of Predictions)."""
    spec, request = method.request(*args)
    return client._stream(spec, **request) if method.stream else client.predict(spec.name, **request)[0]


async def acall(method: PatternMethod, client: Any, *args: Any) -> Any:
    """The same call as a coroutine."""
    spec, request = method.request(*args)
    return await client._stream(spec, **request) if method.stream else (await client.predict(spec.name, **request))[0]


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)


def _docstring(first: PatternSpec, specs: Sequence[PatternSpec]) -> str:
    """The entry's doc (else its summary), then the models and what the answers carry."""
    text = first.doc or first.summary[0].upper() + first.summary[1:] + "."
    models = ", ".join(f"`{s.model}`" + (f' (form "{s.form}")' if len(specs) > 1 else "") for s in specs)
    carries = [f"`.{f.name}`" for f in RESULT_FIELDS if set(f.outputs) & set(first.outputs)]
    return "\n\n".join([text, f"Model {models}." + (f" Answers carry {', '.join(carries)}." if carries else "")])


def pattern_methods(specs: Iterable[PatternSpec] | None = None) -> dict[str, PatternMethod]:
    """Every method of the table (PATTERNS, then STREAMS), by name, in the table's order."""
    grouped: dict[str, list[PatternSpec]] = {}
    for spec in specs if specs is not None else (*PATTERNS.values(), *STREAMS.values()):
        grouped.setdefault(spec.method_name, []).append(spec)
    return {name: PatternMethod(name, group) for name, group in grouped.items()}


METHODS: dict[str, PatternMethod] = pattern_methods()
