"""The flags of `nar train` and `nar reduce` that set a method's settings, read from the
methods' settings models: one flag per setting (one for a setting that several methods share),
its help the setting's description; a searched setting takes one value here."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from nar_search.models.errors import ModelError
from nar_search.search.methods import MethodSettings, ReductionMethod
from nar_search.search.methods.settings import is_dimension

Fields = dict[str, tuple[FieldInfo, list[str]]]  # each setting, and the methods that have it


def with_method_options(methods: Iterable[ReductionMethod[Any]]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Adds a flag for every setting of `methods` to a command that takes `method` and `settings`:
    the command gets the settings of its `--method`, from the flags given and the defaults."""
    methods = list(methods)
    fields: Fields = {}
    for method in methods:
        for name, field in method.Settings.model_fields.items():
            fields.setdefault(name, (field, []))[1].append(method.name)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(command, eval_str=True)
        flags = {name: spec for name, spec in fields.items() if name not in own.parameters}

        @functools.wraps(command)
        def run(**given: Any) -> None:
            # Called as a function (nar demo calls train_command), a flag left out is left at its default.
            values = {name: given.pop(name, None) for name in flags}
            chosen = given.get("method", own.parameters["method"].default)
            method = next((m for m in methods if m.name == chosen), None)
            given["settings"] = _settings(method, {name: value for name, value in values.items() if value is not None}, fields)
            command(**given)

        parameters = [p for p in own.parameters.values() if p.name != "settings"]
        parameters += [_flag(name, field, users) for name, (field, users) in flags.items()]
        run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _settings(method: ReductionMethod[MethodSettings] | None, values: dict[str, Any], fields: Fields) -> MethodSettings | None:
    if method is None:  # an unknown --method: the command says which there are
        return None
    for name in values:
        if method.name not in fields[name][1]:
            owners = ", ".join(fields[name][1])
            raise ModelError(
                f"--{name.replace('_', '-')} is a setting of {owners}, not of {method.name}: leave it out, or pick that --method"
            )
    return method.settings(values)


def _flag(name: str, field: FieldInfo, users: list[str]) -> inspect.Parameter:
    kind: Any = float if is_dimension(field.annotation) else field.annotation  # a type form (a Literal too), read by typer
    option = typer.Option(help=f"{', '.join(users)}: {field.description}", show_default=str(field.default))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option])
