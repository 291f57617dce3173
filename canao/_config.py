"""Strict conversion of parsed YAML/JSON mappings into frozen dataclasses.

Every config in canao is a frozen dataclass; files are only their serialisation. This
module is the one place that turns a mapping into such a dataclass, rejecting unknown
keys and wrong types with a message that names the file, the key path and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from canao._shipped_files import resolve_shipped

T = TypeVar("T")


def positive(name: str, *values: int | float) -> None:
    """Raise ``ValueError`` naming ``name`` unless every value is positive (for ``__post_init__``)."""
    for v in values:
        if v <= 0:
            raise ValueError(f"'{name}' must be positive, got {v}")


def build(cls: type[T], data: Any, *, where: str, path: str, error: type[Exception]) -> T:
    """Build dataclass ``cls`` from ``data``.

    Args:
        cls: A dataclass type whose fields carry type annotations.
        data: The parsed mapping.
        where: The file the mapping came from (for messages).
        path: The dotted key path of ``data`` inside that file (for messages).
        error: The exception class to raise (a :class:`canao.CanaoError` subclass).

    Raises:
        error: on a non-mapping, an unknown or missing key, a wrong type, or when the
            dataclass's own ``__post_init__`` validation raises ``ValueError``.
    """
    label = path or "top level"
    if not isinstance(data, Mapping):
        raise error(f"{where}: {label} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise error(
            f"{where}: unknown key '{_join(path, unknown[0])}'; valid keys are "
            f"{', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = _join(path, name)
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise error(f"{where}: missing required key '{key}'")
            continue
        kwargs[name] = _convert(hints[name], data[name], where=where, path=key, error=error)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise error(f"{where}: {label}: {e}") from e


def parse_text(text: str, fmt: Literal["yaml", "json"]) -> Any:
    """Parse YAML (safe loading only) or JSON; a syntax error is a ``ValueError`` naming where."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            line, column, problem = e.lineno, e.colno, e.msg
    else:
        import yaml  # not at the top: reading a JSON profile (``canao status``) never needs it

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            problem = str(getattr(e, "problem", None) or e)
    at = f" at line {line}, column {column}" if line else ""
    raise ValueError(f"not valid {fmt.upper()}{at}: {problem}")


@dataclasses.dataclass(frozen=True)
class FileKind(Generic[T]):
    """One kind of config file: its class, text format, size limit and shipped folder.

    ``parse`` builds the config from text (over ``limit`` bytes is refused before parsing);
    ``load`` reads a path, or a shipped file named without its folder or suffix.
    """

    cls: type[T]
    fmt: Literal["yaml", "json"]
    folder: str  # shipped folder: search_spaces, tvm_targets
    limit: int
    what: str  # "space file", "target profile"
    error: type[Exception]

    def parse(self, text: str, *, where: str = "<string>", name: str = "") -> T:
        if len(text.encode()) > self.limit:
            raise self.error(f"{where}: larger than {self.limit} bytes; not a {self.what}")
        try:
            data = parse_text(text, self.fmt)
        except ValueError as e:
            raise self.error(f"{where}: {e}") from e
        return build_file(self.cls, data, name=name, where=where, error=self.error)

    def load(self, path: str | Path) -> T:
        p = resolve_shipped(path, self.folder, "." + self.fmt, self.error, self.what)
        return self.parse(p.read_text(), where=str(p), name=p.stem)


def build_file(cls: type[T], data: Any, *, name: str, where: str, error: type[Exception]) -> T:
    """Build a whole file's config; its ``name`` defaults to the file's stem."""
    if isinstance(data, Mapping) and not data.get("name"):
        data = {**data, "name": name}
    return build(cls, data, where=where, path="", error=error)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(tp: Any, value: Any, *, where: str, path: str, error: type[Exception]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where=where, path=path, error=error)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where=where, path=path, error=error)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise error(f"{where}: '{path}' must be a list, got {type(value).__name__}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(
            _convert(item_tp, v, where=where, path=f"{path}[{i}]", error=error)
            for i, v in enumerate(value)
        )
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise error(f"{where}: '{path}' must be a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise error(
                f"{where}: '{path}' must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error(f"{where}: '{path}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where}: '{path}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: '{path}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise error(f"{where}: '{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {path}")  # a bug, not user input


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
