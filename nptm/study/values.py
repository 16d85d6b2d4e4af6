"""Converting a config value (from a flag string, a config file or Python) to its field's type, with one-line
errors naming the flag (``nptm.study.config``'s dataclasses declare the fields)."""
from __future__ import annotations

import types
import typing
from typing import Any

from nptm.utils.errors import ConfigError


def repr_value(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def field_types(sec) -> dict[str, Any]:
    return typing.get_type_hints(sec)


def base_type(tp):
    """(scalar type, is_tuple, optional) of an annotation like ``tuple[float, ...] | None``."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def scalar(tp, text, name):
    if tp is bool:
        if isinstance(text, bool):
            return text
        if str(text).lower() in ("1", "true", "yes", "on"):
            return True
        if str(text).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if tp is int and isinstance(text, float) and not text.is_integer():
        raise ValueError(f"not an integer: {text!r}")
    return tp(text)


def convert(sec, name: str, value):
    """Validate/convert one value (from a file, a flag string or Python) to the field's type."""
    f = sec.__dataclass_fields__[name]
    tp, is_tuple, optional = base_type(field_types(sec)[name])
    flag = "--" + name.replace("_", "-")
    try:
        if value is None:
            if not optional:
                raise ValueError("may not be empty")
            return None
        if "parse" in f.metadata and isinstance(value, (str, int)) and not isinstance(value, bool):
            out = f.metadata["parse"](value)
        elif is_tuple:
            items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
            out = tuple(scalar(tp, x.strip() if isinstance(x, str) else x, name) for x in items
                        if not (isinstance(x, str) and not x.strip()))
            if not out and f.default != ():
                raise ValueError("needs at least one value")
        else:
            out = scalar(tp, value, name)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{flag}: invalid value {value!r} ({e})") from None
    choices = f.metadata.get("choices")
    for x in out if is_tuple else (out,):
        if choices and x is not None and x not in choices:
            raise ConfigError(f"{flag}: unknown {name.rstrip('s')} {x!r}; choose from {', '.join(choices)}")
    return out
