"""Argument templates: how a task call's arguments travel to the server.

When an author writes `load(transform(rows), limit=limit)`, the arguments
are not values yet: `transform(rows)` is the result of another task and
`limit` is a DAG param. The SDK encodes each argument as a JSON node

    {"value": <any JSON>}      a literal
    {"ref": "<task_id>"}       the result of an upstream task
    {"param": "<name>"}        the run's value of a DAG param
    {"list": [node, ...]}      a list holding references
    {"dict": {"key": node}}    an object holding references

and the server resolves the nodes when it hands the task to a worker, so a
worker in any language only ever receives plain JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Node = dict[str, Any]


class NotJSON(TypeError):
    """An argument that cannot be carried as JSON."""


def encode(value: Any, refs: Callable[[Any], Node | None]) -> Node:
    """Encode one argument. `refs` turns SDK objects (tasks, params) into nodes."""
    node = refs(value)
    if node is not None:
        return node
    if value is None or isinstance(value, bool | str):
        return {"value": value}
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise NotJSON(f"{value!r} is not a finite number")
        return {"value": value}
    if isinstance(value, list | tuple):
        items = [encode(v, refs) for v in value]
        if all("value" in n for n in items):
            return {"value": [n["value"] for n in items]}
        return {"list": items}
    if isinstance(value, dict):
        entries: dict[str, Node] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotJSON(f"dictionary key {k!r} is not a string")
            entries[k] = encode(v, refs)
        if all("value" in n for n in entries.values()):
            return {"value": {k: n["value"] for k, n in entries.items()}}
        return {"dict": entries}
    raise NotJSON(f"a {type(value).__name__} is not JSON-serialisable")


def walk(node: Any) -> Iterator[Any]:
    """Every node of a template, depth first (malformed ones included, not descended)."""
    yield node
    if not isinstance(node, dict):
        return
    children = node.get("list") if "list" in node else (node.get("dict") if "dict" in node else None)
    if isinstance(children, dict):
        children = list(children.values())
    if isinstance(children, list):
        for child in children:
            yield from walk(child)


def _roots(arguments: Mapping[str, Any]) -> Iterator[Node]:
    yield from arguments.get("args", [])
    yield from arguments.get("kwargs", {}).values()


def references(arguments: Mapping[str, Any]) -> set[str]:
    """The task ids whose results the call needs."""
    return {
        n["ref"]
        for root in _roots(arguments)
        for n in walk(root)
        if isinstance(n, dict) and isinstance(n.get("ref"), str)
    }


def check(arguments: Mapping[str, Any], upstream: set[str], params: set[str]) -> Iterator[str]:
    """Yield a message for every malformed node or dangling reference."""
    if not isinstance(arguments, Mapping) or set(arguments) - {"args", "kwargs"}:
        yield "arguments must be an object with 'args' and 'kwargs'"
        return
    if not isinstance(arguments.get("args", []), list) or not isinstance(arguments.get("kwargs", {}), dict):
        yield "arguments: 'args' must be a list and 'kwargs' an object"
        return
    for root in _roots(arguments):
        for node in walk(root):
            if not _well_formed(node):
                yield f"malformed argument node {node!r}"
            elif "ref" in node and node["ref"] not in upstream:
                yield f"argument uses the result of {node['ref']!r}, which is not an upstream task"
            elif "param" in node and node["param"] not in params:
                yield f"argument uses param {node['param']!r}, which the DAG does not declare"


def _well_formed(node: Any) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        return False
    [(kind, value)] = node.items()
    match kind:
        case "value":
            return True
        case "ref" | "param":
            return isinstance(value, str)
        case "list":
            return isinstance(value, list)
        case "dict":
            return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return False


def resolve_node(node: Node, results: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    if "value" in node:
        return node["value"]
    if "ref" in node:
        # An upstream that did not succeed (say, before an all_done task) has no result.
        return results.get(node["ref"])
    if "param" in node:
        return params.get(node["param"])
    if "list" in node:
        return [resolve_node(n, results, params) for n in node["list"]]
    if "dict" in node:
        return {k: resolve_node(n, results, params) for k, n in node["dict"].items()}
    raise ValueError(f"malformed argument node {node!r}")


def resolve(
    arguments: Mapping[str, Any], results: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Turn a template into (args, kwargs) given upstream results and run params."""
    args = [resolve_node(n, results, params) for n in arguments.get("args", [])]
    kwargs = {k: resolve_node(n, results, params) for k, n in arguments.get("kwargs", {}).items()}
    return args, kwargs


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, refusing NaN and non-JSON types."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    if not data:
        return None
    return json.loads(data)
