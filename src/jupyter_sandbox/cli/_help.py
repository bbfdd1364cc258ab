"""Plain `--help` pages: `ID`, `[CODE]`, `FILES...` and `--limit LIMIT`, never Python types.

Typer renders required arguments as `{ID}` and types as `<list[Path]>` or `<float range>`;
`PlainTyper` makes every command it registers use `PlainCommand`, which writes help the way
click always has. A test renders every command's `--help` and fails on such leftovers.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import typer
from typer.core import TyperCommand
from typer.models import CommandFunctionType

__all__ = ["PlainCommand", "PlainTyper"]


def _argument_label(param: Any) -> str:
    label = str(param.metavar or (param.name or "").upper())
    return label + ("..." if param.nargs != 1 else "")


def _show(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def _option_metavar(param: Any) -> str:
    if param.metavar:
        return str(param.metavar)
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None) if descriptor is not None else None
    if getattr(descriptor, "is_choice", False) and choices:
        return "[" + "|".join(_show(choice) for choice in choices) + "]"
    return str(param.name or "value").upper()


def _extras(param: Any) -> list[str]:
    """`default: 20`, `1 to 100`, `required`: what click adds in brackets after the help."""
    extras = []
    if isinstance(param.show_default, str):
        extras.append(f"default: {param.show_default}")
    elif (
        param.show_default
        and param.default is not None
        and not getattr(param, "is_flag", False)
        and param.default not in ((), [])
    ):
        extras.append(f"default: {_show(param.default)}")
    info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if low is not None and high is not None:
        extras.append(f"{low} to {high}")
    elif low is not None:
        extras.append(f"at least {low}")
    elif high is not None:
        extras.append(f"at most {high}")
    if param.required:
        extras.append("required")
    return extras


def _record(param: Any) -> tuple[str, str]:
    if param.param_type_name == "argument":
        name = _argument_label(param)
    else:
        name = ", ".join(sorted(param.opts, key=len))
        if param.secondary_opts:
            name += " / " + ", ".join(param.secondary_opts)
        if not getattr(param, "is_flag", False):
            name += " " + _option_metavar(param)
    extras = _extras(param)
    help_text = " ".join((param.help or "").split())
    if extras:
        help_text = f"{help_text}  [{'; '.join(extras)}]".strip()
    return name, help_text


class PlainCommand(TyperCommand):
    """A Typer command whose usage line and help use plain metavars."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] ID [CODE]`."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                label = _argument_label(param)
                pieces.append(label if param.required else f"[{label}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """An Arguments and an Options section, each a definition list."""
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                arguments.append(_record(param))
            else:
                options.append(_record(param))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class PlainTyper(typer.Typer):
    """`typer.Typer` whose commands default to `PlainCommand`."""

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        """As `typer.Typer.command`, with `cls=PlainCommand` unless given."""
        kwargs.setdefault("cls", PlainCommand)
        return super().command(*args, **kwargs)
