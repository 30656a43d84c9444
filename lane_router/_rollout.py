"""Canary rollout steps as in-place edits of a ``lanes.yaml`` text.

Why text edits and not load-modify-dump: the file is the user's (often in Git), with comments,
ordering and quoting they chose; a re-dump would lose all of it and turn a one-number change
into a whole-file diff. Each step finds the YAML nodes with ``yaml.compose`` (which keeps every
node's character span), splices new text at those spans, and then proves the result: the edited
text must load as a valid topology *equal* to the old topology with only the intended change
(computed independently with ``topology_to_dict``). Anything else (anchors shared with other
keys, exotic layouts) is refused, never written.

    step(text, service, action, ...) -> (new_text, summary)
    write_atomically(path, text)      # same directory temp file + os.replace

Actions: ``weight`` (set, or declare a canary when ``version`` is given), ``promote`` (the
canary's endpoints become the baseline's; the canary and its version entry are removed),
``abort`` (weight 0 and no content matches: the canary gets nothing, its version stays
declared so Istio's subset outlives the routes), ``remove`` (delete a canary that takes nothing:
the block and its version entry).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lane_router._document import (
    loads_topology,
    parse_endpoint,
    topology_from_dict,
    topology_to_dict,
)
from lane_router._files import write_atomically as _replace_file
from lane_router._topology import Topology, TopologyError

__all__ = [
    "ACTIONS",
    "RolloutError",
    "check_endpoints",
    "parse_match",
    "step",
    "write_atomically",
]

ACTIONS = ("weight", "promote", "abort", "remove")
_PLAIN_KEY = re.compile(r"[a-z][a-z0-9-]*")

Edit = tuple[int, int, str]  # replace text[start:end] with the string


class RolloutError(ValueError):
    """Bad input or a file this command cannot edit safely; the file is left untouched."""


def step(
    text: str,
    service: str,
    action: str,
    *,
    weight: int | None = None,
    version: str | None = None,
    endpoints: Sequence[str] = (),
    matches: Sequence[dict[str, Any]] = (),
    source: str | None = None,
) -> tuple[str, str]:
    """The edited text and a one-line summary. Raises RolloutError or TopologyError."""
    if action not in ACTIONS:
        raise RolloutError(f"unknown action {action!r}")
    old = loads_topology(text, source=source)
    svc = old.services.get(service)
    if svc is None:
        known = ", ".join(old.services) or "none"
        raise RolloutError(f"unknown service {service!r} (services: {known})")
    if action == "weight":
        if weight is None or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise RolloutError(f"--weight must be a whole number 0-100, got {weight!r}")
    elif weight is not None or version is not None or endpoints or matches:
        raise RolloutError(f"--{action} takes no --weight, --version, --endpoint or --match")
    if svc.canary is None and not (action == "weight" and version is not None):
        hint = " (declare one with --version V --weight N)" if action == "weight" else ""
        raise RolloutError(f"service {service!r} has no canary{hint}")
    if svc.canary is not None and version is not None and version != svc.canary.version:
        raise RolloutError(
            f"service {service!r} already has canary {svc.canary.version!r}: "
            "promote or abort it before declaring another"
        )
    if svc.canary is not None and (endpoints or matches):
        raise RolloutError(
            "--endpoint and --match only declare a new canary; edit the file to "
            "change an existing canary's matches"
        )
    if action == "remove" and (svc.canary.weight or svc.canary.matches):  # type: ignore[union-attr]
        raise RolloutError(
            f"the canary of {service!r} still takes traffic: --abort first (routes go before "
            "the version they point at), then --remove"
        )

    if action == "promote":
        gone = svc.canary.version  # type: ignore[union-attr]
        if svc.versions[old.baseline] and not svc.versions[gone]:
            raise RolloutError(
                f"canary {gone!r} of {service!r} has no endpoints: promoting it would leave "
                f"the {old.baseline} without any"
            )
    expected = _expected(old, service, action, weight, version, endpoints, matches)
    want = topology_from_dict(expected, source=source)  # bad input fails here, naming the key
    doc = yaml.compose(text, Loader=yaml.SafeLoader)
    if doc is None:  # pragma: no cover - loads_topology above found the service in it
        raise RolloutError("the file holds no document")
    edits = _edits(text, doc, old, service, action, weight, version, endpoints, matches)
    new_text = _apply(text, edits)
    try:
        got = loads_topology(new_text, source=source)
    except TopologyError as exc:
        raise RolloutError(
            f"cannot edit this file safely (the edit would not load: {exc})"
        ) from None
    if topology_to_dict(got) != topology_to_dict(want):
        raise RolloutError(
            "cannot edit this file safely (anchors, aliases or an unusual layout): edit it by hand"
        )
    return new_text, _summary(old, got, service, action)


def _expected(
    old: Topology,
    service: str,
    action: str,
    weight: int | None,
    version: str | None,
    endpoints: Sequence[str],
    matches: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    doc = copy.deepcopy(topology_to_dict(old))
    entry = doc["services"][service]
    versions = entry["versions"]
    canary: dict[str, Any] = entry.get("canary") or {}
    if action == "weight":
        if not canary:
            assert version is not None
            if version not in versions:
                versions[version] = list(endpoints)
            elif endpoints:
                raise RolloutError(f"version {version!r} already exists: drop --endpoint")
            canary = {"version": version, "weight": weight}
            entry["canary"] = canary
            if matches:
                canary["match"] = list(matches)
        canary["weight"] = weight
    elif action == "abort":
        canary["weight"] = 0
        canary.pop("match", None)
    else:  # promote, remove
        gone = canary["version"]
        if action == "promote":
            versions[old.baseline] = versions[gone]
        del versions[gone]
        del entry["canary"]
    return doc


# -- text edits ------------------------------------------------------------------------------


def _edits(
    text: str,
    doc: yaml.Node,
    old: Topology,
    service: str,
    action: str,
    weight: int | None,
    version: str | None,
    endpoints: Sequence[str],
    matches: Sequence[dict[str, Any]],
) -> list[Edit]:
    services = _value(doc, "services")
    svc_node = _value(services, service)
    if not isinstance(svc_node, yaml.MappingNode):
        raise RolloutError("cannot edit this file safely: the service is not a mapping")
    versions = _value(svc_node, "versions")
    if not isinstance(versions, yaml.MappingNode):
        raise RolloutError("cannot edit this file safely: 'versions' is not a mapping")
    canary_entry = _entry(svc_node, "canary")
    nl = "\r\n" if "\r\n" in text else "\n"
    if canary_entry is None or _is_null(canary_entry[1]):
        # Declare: the version entry (if new), then the canary block.
        assert version is not None and weight is not None
        edits: list[Edit] = []
        if _entry(versions, version) is None:
            edits.append(_insert(text, versions, version, _flow(list(endpoints)), nl))
        value: dict[str, Any] = {"version": version, "weight": weight}
        if matches:
            value["match"] = list(matches)
        if canary_entry is not None:  # `canary:` or `canary: null`
            edits.append(_replace_value(text, canary_entry, _flow(value)))
        else:
            edits.append(_insert(text, svc_node, "canary", _flow(value), nl))
        return edits
    canary = canary_entry[1]
    if not isinstance(canary, yaml.MappingNode):
        raise RolloutError("cannot edit this file safely: the canary is not a mapping")
    if action in ("weight", "abort"):
        new_weight = weight if action == "weight" else 0
        edits = []
        weight_entry = _entry(canary, "weight")
        if weight_entry is None:
            edits.append(_insert(text, canary, "weight", str(new_weight), nl))
        else:
            edits.append(_replace_value(text, weight_entry, str(new_weight)))
        if action == "abort" and _entry(canary, "match") is not None:
            edits.append(_remove(text, canary, "match"))
        return edits
    gone = old.services[service].canary.version  # type: ignore[union-attr]
    edits = [_remove(text, svc_node, "canary"), _remove(text, versions, gone)]
    if action == "promote":
        base_entry = _entry(versions, old.baseline)
        assert base_entry is not None
        eps = [str(e) for e in old.services[service].versions[gone]]
        edits.append(_replace_value(text, base_entry, _flow(eps)))
    return edits


def _apply(text: str, edits: list[Edit]) -> str:
    edits = sorted(edits, key=lambda e: (e[0], e[1]))
    for (_, end1, _), (start2, _, _) in itertools.pairwise(edits):
        if start2 < end1:
            raise RolloutError("cannot edit this file safely: overlapping edits")
    out = []
    pos = 0
    for start, end, new in edits:
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _entry(mapping: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and str(k.value) == key:
            return k, v
    return None


def _value(mapping: yaml.Node, key: str) -> yaml.Node:
    entry = _entry(mapping, key)
    if entry is None:
        raise RolloutError(f"cannot edit this file safely: no {key!r} mapping found")
    return entry[1]


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _end(node: yaml.Node) -> int:
    """Where a node's own text ends (a block collection's end mark lies past trailing lines)."""
    if not isinstance(node, yaml.CollectionNode) or node.flow_style or not node.value:
        return node.end_mark.index
    last = node.value[-1]
    if isinstance(node, yaml.MappingNode):
        k, v = last
        return max(_end(k), _end(v))
    return _end(last)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _replace_value(text: str, entry: tuple[yaml.Node, yaml.Node], new: str) -> Edit:
    key, value = entry
    empty = _is_null(value) and value.start_mark.index == value.end_mark.index
    if empty or value.start_mark.line != key.end_mark.line:
        # `key:` with nothing after it, or a block value on the next lines (a block sequence
        # may sit at the key's own indentation, a flow one may not): write after the colon.
        colon = text.index(":", key.end_mark.index)
        end = colon + 1 if empty else _end(value)
        return colon + 1, end, f" {new}"
    return value.start_mark.index, _end(value), new


def _remove(text: str, mapping: yaml.MappingNode, key: str) -> Edit:
    pairs = mapping.value
    index = next(i for i, (k, _) in enumerate(pairs) if str(k.value) == key)
    k, v = pairs[index]
    if mapping.flow_style:
        if index > 0:
            return _end(pairs[index - 1][1]), _end(v), ""
        if len(pairs) > 1:
            return k.start_mark.index, pairs[1][0].start_mark.index, ""
        return k.start_mark.index, _end(v), ""
    start = _line_start(text, k.start_mark.index)
    if text[start : k.start_mark.index].strip():
        raise RolloutError(f"cannot edit this file safely: {key!r} does not start its line")
    return start, _line_end(text, _end(v)), ""


def _insert(text: str, mapping: yaml.MappingNode, key: str, value: str, nl: str) -> Edit:
    pairs = mapping.value
    if mapping.flow_style or not pairs:
        if not mapping.flow_style:
            raise RolloutError(f"cannot edit this file safely: empty mapping for {key!r}")
        if not pairs:
            close = mapping.end_mark.index - 1
            return close, close, f"{key}: {value}"
        at = _end(pairs[-1][1])
        return at, at, f", {key}: {value}"
    first_key = pairs[0][0]
    indent = " " * first_key.start_mark.column
    if text[_line_start(text, first_key.start_mark.index) : first_key.start_mark.index].strip():
        raise RolloutError(f"cannot edit this file safely: cannot place {key!r}")
    at = _line_end(text, _end(pairs[-1][1]))
    lead = nl if at == len(text) and not text.endswith("\n") else ""
    return at, at, f"{lead}{indent}{key}: {value}{nl}"


def _flow(value: Any) -> str:
    """A YAML flow rendering: JSON scalars (always read back as the same type), plain keys."""
    if isinstance(value, dict):
        items = (
            f"{k if _PLAIN_KEY.fullmatch(k) else json.dumps(k)}: {_flow(v)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str) and _PLAIN_KEY.fullmatch(value) and _reads_as_str(value):
        return value  # `version: v2`, not `version: "v2"`
    return json.dumps(value, ensure_ascii=False)


def _reads_as_str(text: str) -> bool:
    if text in ("y", "n"):  # YAML 1.1 booleans to Go's yaml.v2, strings to PyYAML
        return False
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str")


def _summary(old: Topology, new: Topology, service: str, action: str) -> str:
    before = old.services[service].canary
    after = new.services[service].canary
    if action == "promote":
        assert before is not None
        eps = ", ".join(str(e) for e in new.services[service].versions[new.baseline]) or "none"
        return f"{service}: promoted {before.version}: it is the {new.baseline} now ({eps})"
    if action == "remove":
        assert before is not None
        return f"{service}: canary {before.version} removed"
    assert after is not None
    if before is None:
        return f"{service}: canary {after.version} declared at weight {after.weight}"
    verb = "aborted, " if action == "abort" else ""
    return f"{service}: canary {after.version} {verb}weight {before.weight} -> {after.weight}"


def parse_match(spec: str) -> dict[str, Any]:
    """``header:NAME:KIND:VALUE`` or ``uri:KIND:VALUE`` (one condition) as a ``match`` entry."""
    what, _, rest = spec.partition(":")
    if what == "header":
        name, _, cond = rest.partition(":")
        kind, sep, value = cond.partition(":")
        if name and sep:
            return {"headers": {name.lower(): {kind: value}}}
    elif what == "uri":
        kind, sep, value = rest.partition(":")
        if sep:
            return {"uri": {kind: value}}
    raise RolloutError(
        f"--match {spec!r}: expected header:NAME:exact|prefix|regex:VALUE or "
        "uri:exact|prefix|regex:VALUE"
    )


def check_endpoints(endpoints: Sequence[str]) -> None:
    for ep in endpoints:
        try:
            parse_endpoint(ep)
        except ValueError as exc:
            raise RolloutError(f"--endpoint {exc}") from None


def write_atomically(path: str | Path, text: str, *, expect: bytes | None = None) -> None:
    """Replace the file in one step: a watcher (the sidecar) sees the old or the new file, whole.

    The temp file lives in the target's directory (os.replace is atomic within a file system);
    a symlink (a ConfigMap mount, a dotfiles link) is followed, not replaced; the mode is kept.
    ``expect``: the bytes read before editing; if the file changed since, nothing is written.
    """
    target = Path(os.path.realpath(path))
    if expect is not None and target.read_bytes() != expect:
        raise RolloutError(f"{path} changed while it was being edited: run the command again")
    _replace_file(target, text)
