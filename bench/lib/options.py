"""Typed options: each benchmark declares its options once, as a frozen dataclass whose fields
are the options (name, type, default, help), and `parse_options` builds the argparse parser from
it and returns the filled-in dataclass. The code reads `options.sessions`, typed, instead of
strings on an `argparse.Namespace`.

A field `setup_concurrency: int = option(50)` is the option `--setup-concurrency N`; a `bool`
is a flag (`--keep-logs`), or `--pin/--no-pin` when `negatable`; a `Literal[...]` gives the
choices; `Path | None` is an optional path.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from .paths import RESULTS_DIR

T = TypeVar("T")

PIN_HELP = (
    "the gateway alone on one CPU (the lowest allowed), the load generator and the local stack "
    "on the others (a gateway is one process on one core; this keeps the test doubles' CPU out "
    "of its measurements)"
)


def option(
    default: Any,
    help: str | None = None,
    *,
    metavar: str | None = None,
    negatable: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option."""
    metadata = {"help": help, "metavar": metavar, "negatable": negatable}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """The options every benchmark takes (bench/README.md). (`option()` is a `dataclasses.field`;
    ruff cannot tell, hence RUF009 on the fields whose type it does not know as immutable.)"""

    pin: bool = option(False, PIN_HELP, negatable=True)
    results_dir: Path = option(RESULTS_DIR)  # noqa: RUF009
    timeout: int = option(900, "hard bound in seconds")
    keep_logs: bool = option(False, "keep the server logs")
    watchdog: Path | None = option(  # noqa: RUF009
        None,
        "run the gateway under tools/serve_watchdog.py: loop stalls over 50 ms, with the stack "
        "that caused them, go to FILE",
        metavar="FILE",
    )
    py_spy: Path | None = option(  # noqa: RUF009
        None,
        "profile the gateway with py-spy during the measurement (collapsed stacks to FILE)",
        metavar="FILE",
    )


def common(options: BenchOptions) -> dict[str, Any]:
    """The `BenchOptions` part of a benchmark's options, to build another benchmark's from."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(BenchOptions)}


def params(options: Any) -> dict[str, str]:
    """Every option as text, as a result file records them."""
    return {k: str(v) for k, v in dataclasses.asdict(options).items()}


def parse_options(cls: type[T], description: str, argv: list[str] | None = None) -> T:
    """`cls` filled in from the command line (`argv`, else sys.argv)."""
    parser = argparse.ArgumentParser(description=description)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        _add(parser, field, hints[field.name])
    return cls(**vars(parser.parse_args(argv)))


def _add(parser: argparse.ArgumentParser, field: dataclasses.Field[Any], hint: Any) -> None:
    flag = "--" + field.name.replace("_", "-")
    meta = field.metadata
    kwargs: dict[str, Any] = {"default": field.default, "help": meta.get("help")}
    if hint is bool:
        action = argparse.BooleanOptionalAction if meta.get("negatable") else "store_true"
        parser.add_argument(flag, action=action, **kwargs)
        return
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if typing.get_origin(hint) is Literal:
        kwargs["choices"] = typing.get_args(hint)
    else:
        kwargs["type"] = _value_type(hint)
    parser.add_argument(flag, **kwargs)


def _value_type(hint: Any) -> Any:
    """`int` for `int`, `Path` for `Path | None`."""
    if isinstance(hint, types.UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint
