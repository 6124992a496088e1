"""JSON schemas compiled into the nodes the JSON automaton (json_grammar.py) walks: OpenAI's strict subset,
and nothing it could not enforce (SchemaError names the first such keyword)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 32  # nesting of a schema, and of schema references followed while compiling one
MAX_NODES = 2000  # schema nodes compiled from one schema
MAX_LITERALS = 1000  # enum values of one schema

# Schema keywords: those that only annotate (no bearing on what is valid), and those the automaton enforces.
ANNOTATIONS = frozenset({"description", "title", "$schema", "$id", "$comment", "default", "examples",
                         "deprecated", "readOnly", "writeOnly", "strict"})
ENFORCED = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const",
                      "anyOf", "$ref", "$defs", "definitions"})


class SchemaError(ValueError):
    """A JSON schema this automaton cannot enforce (or that is not a schema at all)."""


class Node:
    """A compiled schema: what one JSON value may be. Compared by identity (frames hold them)."""


class AnyValue(Node):
    pass


ANY = AnyValue()


@dataclass(eq=False)
class ObjectNode(Node):
    """Keys as their JSON text between the quotes (UTF-8); `free`: any keys, any values (json_object)."""

    props: dict[bytes, Node] = field(default_factory=dict)
    required: frozenset[bytes] = frozenset()
    free: bool = False


@dataclass(eq=False)
class ArrayNode(Node):
    items: Node = ANY


class StringNode(Node):
    pass


@dataclass(eq=False)
class NumberNode(Node):
    integer: bool = False


@dataclass(eq=False)
class LiteralNode(Node):
    options: tuple[bytes, ...] = ()


@dataclass(eq=False)
class UnionNode(Node):
    options: tuple[Node, ...] = ()


@dataclass(eq=False)
class EncodedNode(Node):
    """A JSON string whose content is itself a JSON text of `inner` (tool call arguments, as OpenAI writes
    them: `"arguments": "{\\"city\\": \\"Oslo\\"}"`)."""

    inner: Node = ANY


@dataclass(eq=False)
class RefNode(Node):
    """A `$ref`, resolved once the whole schema is compiled (so schemas may recurse)."""

    target: Node | None = None


FREE_OBJECT = ObjectNode(free=True)
STRING = StringNode()
NUMBER, INTEGER = NumberNode(False), NumberNode(True)
BOOLEAN = LiteralNode((b"true", b"false"))
NULL = LiteralNode((b"null",))
ANY_TYPES: tuple[Node, ...] = (FREE_OBJECT, ArrayNode(ANY), STRING, NUMBER, BOOLEAN, NULL)


def deref(node: Node) -> Node:
    while isinstance(node, RefNode):
        assert node.target is not None  # compile_schema resolves every reference before returning
        node = node.target
    return node


def literal(value: Any) -> bytes:
    """A JSON value as the one text a literal (enum, const) must be written as."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def compile_schema(schema: Any) -> ObjectNode | RefNode:
    """A JSON schema as a node; raises SchemaError naming what is not supported. The root must be an object.

    Supported (OpenAI's strict subset): type (one or a list), properties, required, additionalProperties,
    items, enum, const, anyOf, $ref to "#" or "#/$defs/..." ("#/definitions/..."), and annotations. Optional
    properties and `additionalProperties` other than false are allowed; the output then simply keeps to the
    declared properties, which the schema allows. Anything else (pattern, format, minLength, minimum,
    minItems, oneOf, allOf...) is refused rather than ignored, since the output could then break it."""
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object")
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        table = schema.get(key)
        if table is not None:
            if not isinstance(table, dict):
                raise SchemaError(f"'{key}' must be an object")
            defs.update({f"#/{key}/{name}": sub for name, sub in table.items()})
    refs: dict[str, RefNode] = {}
    count = [0]

    def build(s: Any, path: str, depth: int) -> Node:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise SchemaError(f"the schema has more than {MAX_NODES} subschemas")
        if depth > MAX_DEPTH:
            raise SchemaError(f"the schema nests deeper than {MAX_DEPTH} levels (at {path})")
        if not isinstance(s, dict):
            raise SchemaError(f"{path} must be a JSON object")
        unknown = sorted(k for k in s if k not in ENFORCED and k not in ANNOTATIONS)
        if unknown:
            raise SchemaError(f"the keyword '{unknown[0]}' (at {path}) is not supported")
        if "$ref" in s:
            ref = s["$ref"]
            if not isinstance(ref, str) or (ref != "#" and ref not in defs):
                raise SchemaError(f"the $ref {str(ref)[:80]!r} (at {path}) does not name '#' or a $defs entry")
            if len(s.keys() - ANNOTATIONS - {"$ref"}) > 0:
                raise SchemaError(f"$ref (at {path}) cannot be combined with other keywords")
            if ref not in refs:
                refs[ref] = RefNode()
            return refs[ref]
        if "anyOf" in s:
            options = s["anyOf"]
            if not isinstance(options, list) or not options:
                raise SchemaError(f"anyOf (at {path}) must be a non-empty array")
            if len(s.keys() - ANNOTATIONS - {"anyOf", "$defs", "definitions"}) > 0:
                raise SchemaError(f"anyOf (at {path}) cannot be combined with other keywords")
            return UnionNode(tuple(build(o, f"{path}.anyOf[{i}]", depth + 1) for i, o in enumerate(options)))
        if "const" in s or "enum" in s:
            values = [s["const"]] if "const" in s else s["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(f"enum (at {path}) must be a non-empty array")
            if len(values) > MAX_LITERALS:
                raise SchemaError(f"enum (at {path}) has more than {MAX_LITERALS} values")
            types = s.get("type")
            allowed = [types] if isinstance(types, str) else types
            if allowed is not None:
                values = [v for v in values if _type_of(v) in allowed or (_type_of(v) == "integer"
                                                                           and "number" in allowed)]
                if not values:
                    raise SchemaError(f"no value of the enum (at {path}) has its type")
            return LiteralNode(tuple(dict.fromkeys(literal(v) for v in values)))
        types = s.get("type")
        if types is None:
            raise SchemaError(f"{path} needs a type (or enum, const, anyOf, $ref)")
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not names or not all(isinstance(t, str) for t in names):
            raise SchemaError(f"type (at {path}) must be a string or an array of strings")
        nodes = [_typed(s, t, path, depth, build) for t in dict.fromkeys(names)]
        return nodes[0] if len(nodes) == 1 else UnionNode(tuple(nodes))

    root = build(schema, "schema", 0)
    pending = list(refs)
    while pending:  # a definition may refer to others, which are compiled in turn
        ref = pending.pop()
        refs[ref].target = root if ref == "#" else build(defs[ref], ref, 1)
        pending += [r for r in refs if refs[r].target is None and r not in pending]
    _check_refs(refs)
    if not isinstance(deref(root), ObjectNode):
        raise SchemaError("the root of the schema must be an object (type: object)")
    assert isinstance(root, ObjectNode | RefNode)
    return root


def _check_refs(refs: dict[str, RefNode]) -> None:
    """A reference that only ever leads to references would loop forever."""
    for ref, node in refs.items():
        seen: set[int] = set()
        target: Node | None = node
        while isinstance(target, RefNode):
            if id(target) in seen:
                raise SchemaError(f"the $ref {ref!r} refers only to itself")
            seen.add(id(target))
            target = target.target


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _typed(s: dict[str, Any], type_: str, path: str, depth: int, build: Any) -> Node:
    if type_ == "object":
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise SchemaError(f"properties (at {path}) must be an object")
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"required (at {path}) must be an array of strings")
        missing = [r for r in required if r not in props]
        if missing:
            raise SchemaError(f"required (at {path}) names {missing[0]!r}, which is not in its properties")
        extra = s.get("additionalProperties", True)
        if not isinstance(extra, bool | dict):
            raise SchemaError(f"additionalProperties (at {path}) must be a boolean or a schema")
        if not props and extra is not False:
            return FREE_OBJECT  # no declared properties: any object
        keys = {name: literal(name)[1:-1] for name in props}
        return ObjectNode({keys[name]: build(sub, f"{path}.properties.{name}", depth + 1)
                           for name, sub in props.items()}, frozenset(keys[r] for r in required))
    if type_ == "array":
        items = s.get("items")
        return ArrayNode(ANY if items is None else build(items, f"{path}.items", depth + 1))
    simple = {"string": STRING, "number": NUMBER, "integer": INTEGER, "boolean": BOOLEAN, "null": NULL}
    if type_ not in simple:
        raise SchemaError(f"the type {type_[:40]!r} (at {path}) is not a JSON schema type")
    return simple[type_]
