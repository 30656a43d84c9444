"""The deterministic YAML writer shared by ``lanes render`` and the controller.

Why a YAML writer of our own: the output is GitOps config, so it must be byte-identical for the
same topology and readable in a diff, and PyYAML's pure-Python emitter is the slowest part of
rendering a large mesh. Generated objects are plain dicts, lists, strings, ints and bools built
in a fixed order, so a small block-style emitter suffices. Strings are written plain only when
every YAML 1.1 and 1.2 reader (PyYAML, kubectl's sigs.k8s.io/yaml, Go yaml.v2/v3) reads them back
as the same string; anything else is double-quoted with JSON's escapes (valid YAML), plus escapes
for what YAML does not allow raw.

    dump_yaml(objects) -> str        # multi-document, "---" before each document
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["dump_yaml"]

# Plain scalars must start with a letter (never a number, an indicator or a YAML 1.2 octal) and
# hold no ':' (YAML 1.1 sexagesimal ints), '#', or spaces.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")
_YAML11_BOOLISH = frozenset({"y", "Y", "n", "N"})  # Go yaml.v2 booleans, strings to PyYAML
# Outside YAML's printable set, or read as a line break inside quotes: written as escapes.
_UNSAFE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def dump_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Block-style YAML, one document per object, byte-identical for equal input."""
    out: list[str] = []
    for obj in objects:
        out.append("---\n")
        if obj:
            _block(out, obj, "")
        else:
            out.append("{}\n")
    return "".join(out)


_STRINGS: dict[str, str] = {}  # value -> its YAML text; names repeat thousands of times


def _string(value: str) -> str:
    text = _STRINGS.get(value)
    if text is None:
        if (
            _PLAIN.fullmatch(value)
            and value not in _YAML11_BOOLISH
            and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG
        ):
            text = value
        else:
            text = _UNSAFE.sub(_escape, json.dumps(value, ensure_ascii=False))
        if len(_STRINGS) >= 262144:  # bounded for the long-running controller
            _STRINGS.clear()
        _STRINGS[value] = text
    return text


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {key!r}")
    return _string(key)


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, list | tuple) and not value:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML config")


def _is_mapping(node: Any) -> bool:
    # isinstance(dict) is a C type check; the Mapping ABC check is ten times slower.
    return isinstance(node, dict) or (
        not isinstance(node, str | list | tuple) and isinstance(node, Mapping)
    )


def _block(out: list[str], node: Any, pad: str) -> None:
    """Append ``node`` (a non-empty mapping or sequence) at indentation ``pad``."""
    append = out.append
    if _is_mapping(node):
        inner = pad + "  "
        for key, value in node.items():
            name = _STRINGS.get(key) or _key(key)
            if isinstance(value, str):
                append(f"{pad}{name}: {_STRINGS.get(value) or _string(value)}\n")
            elif isinstance(value, list | tuple):
                if value:
                    append(f"{pad}{name}:\n")
                    _block(out, value, pad)
                else:
                    append(f"{pad}{name}: []\n")
            elif value and _is_mapping(value):
                append(f"{pad}{name}:\n")
                _block(out, value, inner)
            else:
                append(f"{pad}{name}: {_scalar(value)}\n")
        return
    inner = pad + "  "
    cut = len(inner)
    for item in node:
        if isinstance(item, str):
            append(f"{pad}- {_STRINGS.get(item) or _string(item)}\n")
        elif item and (isinstance(item, list | tuple) or _is_mapping(item)):
            start = len(out)
            _block(out, item, inner)
            out[start] = f"{pad}- {out[start][cut:]}"
        else:
            append(f"{pad}- {_scalar(item)}\n")
