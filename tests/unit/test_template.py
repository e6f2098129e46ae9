"""Argument templates: encoding, resolution, references and checks."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pytest

from weir import _template
from weir._template import Node, NotJSON


class Ref:
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


class Param:
    def __init__(self, name: str) -> None:
        self.name = name


def refs(value: Any) -> Node | None:
    if isinstance(value, Ref):
        return {"ref": value.task_id}
    if isinstance(value, Param):
        return {"param": value.name}
    return None


def enc(value: Any) -> Node:
    return _template.encode(value, refs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {"value": None}),
        (True, {"value": True}),
        (0, {"value": 0}),
        (-3, {"value": -3}),
        (1.5, {"value": 1.5}),
        ("text", {"value": "text"}),
        ([], {"value": []}),
        ({}, {"value": {}}),
        ([1, "a", None], {"value": [1, "a", None]}),
        ((1, 2), {"value": [1, 2]}),
        ({"a": [1, {"b": 2}]}, {"value": {"a": [1, {"b": 2}]}}),
    ],
)
def test_encode_literals(value: Any, expected: Node) -> None:
    assert enc(value) == expected


def test_encode_refs_and_params() -> None:
    assert enc(Ref("extract")) == {"ref": "extract"}
    assert enc(Param("limit")) == {"param": "limit"}


def test_encode_nested_references() -> None:
    assert enc([1, Ref("a"), [Param("p")]]) == {
        "list": [{"value": 1}, {"ref": "a"}, {"list": [{"param": "p"}]}]
    }
    assert enc({"x": Ref("a"), "lit": {"k": 1}}) == {"dict": {"x": {"ref": "a"}, "lit": {"value": {"k": 1}}}}
    assert enc({"outer": [{"inner": Ref("b")}]}) == {
        "dict": {"outer": {"list": [{"dict": {"inner": {"ref": "b"}}}]}}
    }


def test_literal_dict_shaped_like_a_node_stays_a_literal() -> None:
    node = enc({"ref": "not-a-task"})
    assert node == {"value": {"ref": "not-a-task"}}
    assert _template.resolve_node(node, {}, {}) == {"ref": "not-a-task"}
    assert _template.references({"args": [node]}) == set()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": math.inf}])
def test_encode_refuses_non_finite_numbers(value: Any) -> None:
    with pytest.raises(NotJSON, match="is not a finite number"):
        enc(value)


def test_encode_refuses_non_string_keys() -> None:
    with pytest.raises(NotJSON, match="dictionary key 1 is not a string"):
        enc({1: "a"})
    with pytest.raises(NotJSON, match=r"dictionary key \('a', 'b'\) is not a string"):
        enc({"ok": {("a", "b"): 1}})


@pytest.mark.parametrize(("value", "kind"), [({1}, "set"), (date(2026, 1, 1), "date"), (b"x", "bytes")])
def test_encode_refuses_other_types(value: Any, kind: str) -> None:
    with pytest.raises(NotJSON, match=f"a {kind} is not JSON-serialisable"):
        enc(value)


def test_not_json_is_a_type_error() -> None:
    assert issubclass(NotJSON, TypeError)


def test_resolve_args_and_kwargs() -> None:
    arguments = {
        "args": [enc(Ref("a")), enc([Ref("b"), 3])],
        "kwargs": {"limit": enc(Param("limit")), "opts": enc({"x": Ref("a"), "y": "lit"})},
    }
    args, kwargs = _template.resolve(arguments, {"a": [1, 2], "b": {"k": None}}, {"limit": 10})
    assert args == [[1, 2], [{"k": None}, 3]]
    assert kwargs == {"limit": 10, "opts": {"x": [1, 2], "y": "lit"}}


def test_resolve_of_empty_arguments() -> None:
    assert _template.resolve({}, {}, {}) == ([], {})
    assert _template.resolve({"args": [], "kwargs": {}}, {}, {}) == ([], {})


def test_resolve_node_rejects_malformed_nodes() -> None:
    with pytest.raises(ValueError, match="malformed argument node"):
        _template.resolve_node({"bogus": 1}, {}, {})


def test_references_finds_nested_refs() -> None:
    arguments = {
        "args": [enc(Ref("a")), enc([1, {"k": Ref("b")}])],
        "kwargs": {"x": enc(Param("p")), "y": enc({"deep": [[Ref("c")]]}), "z": enc(5)},
    }
    assert _template.references(arguments) == {"a", "b", "c"}
    assert _template.references({"args": [], "kwargs": {}}) == set()


def test_check_accepts_good_arguments() -> None:
    arguments = {"args": [enc([Ref("a"), 1])], "kwargs": {"p": enc(Param("p")), "v": enc({"x": 1})}}
    assert list(_template.check(arguments, {"a"}, {"p"})) == []


def test_check_flags_dangling_refs_and_params() -> None:
    arguments = {"args": [{"ref": "ghost"}], "kwargs": {"x": {"list": [{"param": "nope"}]}}}
    problems = list(_template.check(arguments, {"a"}, {"p"}))
    assert problems == [
        "argument uses the result of 'ghost', which is not an upstream task",
        "argument uses param 'nope', which the DAG does not declare",
    ]


@pytest.mark.parametrize(
    "node",
    [
        {"value": 1, "ref": "a"},
        {"bogus": 1},
        {},
        "bare string",
        5,
    ],
)
def test_check_flags_malformed_nodes(node: Any) -> None:
    problems = list(_template.check({"args": [node]}, {"a"}, set()))
    assert len(problems) == 1
    assert problems[0].startswith("malformed argument node")


@pytest.mark.parametrize(
    "node",
    [
        {"list": [5]},
        {"list": 5},
        {"dict": [1, 2]},
        {"dict": {"k": "not a node"}},
        {"list": [{"value": 1}, None]},
    ],
)
def test_check_flags_malformed_nested_nodes_without_crashing(node: Any) -> None:
    # The server runs check() on specs sent by any client: a malformed node
    # must become a message (INVALID_ARGUMENT), never an exception.
    problems = list(_template.check({"args": [], "kwargs": {"x": node}}, set(), set()))
    assert problems
    assert all("malformed" in p for p in problems)


@pytest.mark.parametrize("ref", [["a"], {"x": 1}, 5])
def test_check_flags_non_string_refs_without_crashing(ref: Any) -> None:
    problems = list(_template.check({"args": [{"ref": ref}]}, {"a"}, set()))
    assert len(problems) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        {"args": [], "other": 1},
        {"args": {"not": "a list"}},
        {"kwargs": ["not", "a dict"]},
        ["not", "a mapping"],
    ],
)
def test_check_flags_malformed_argument_shapes(arguments: Any) -> None:
    problems = list(_template.check(arguments, set(), set()))
    assert len(problems) == 1
    assert "arguments" in problems[0]


def test_walk_is_depth_first() -> None:
    node = enc([Ref("a"), {"k": Ref("b")}])
    assert [n for n in _template.walk(node) if "ref" in n] == [{"ref": "a"}, {"ref": "b"}]


def test_dumps_is_compact_and_refuses_nan() -> None:
    assert _template.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        _template.dumps(math.nan)
    with pytest.raises(TypeError):
        _template.dumps({1, 2})


def test_loads() -> None:
    assert _template.loads(b"") is None
    assert _template.loads("") is None
    assert _template.loads(b'{"a":1}') == {"a": 1}
