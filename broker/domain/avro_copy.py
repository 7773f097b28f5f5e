"""Avro field types copied from a stream's schema into a delivery namespace, for the schemas plans project."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.errors import PolicyEngineError

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


class TypeCopier:
    """Copies field types into the delivery namespace, defining each named type where it is first used."""

    def __init__(self, stream_schema: Mapping[str, Any]) -> None:
        self._top = _fullname(stream_schema["name"], stream_schema.get("namespace", ""))
        self.namespace = _namespace_of(self._top)
        self.record_name = _short(self._top)
        self._named: dict[str, Mapping[str, Any]] = {}
        for field in stream_schema.get("fields", []):
            _index_named(field["type"], self.namespace, self._named)
        # Short name -> source full name: every named type lands in one namespace, so short names must not clash.
        self._emitted: dict[str, str] = {self.record_name: self._top}

    def field(self, field: Mapping[str, Any], name: str, namespace: str) -> dict[str, Any]:
        copied = _without_accord(field)
        copied["name"] = name
        copied["type"] = self._type(field["type"], namespace)
        return copied

    def _type(self, node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            return node if node in _PRIMITIVES else self._named_type(_fullname(node, namespace))
        if isinstance(node, list):
            return [self._type(branch, namespace) for branch in node]
        kind = node.get("type")
        if kind in _NAMED_KINDS:
            return self._named_type(_fullname(node["name"], node.get("namespace", namespace)))
        copied = _without_accord(node)
        if kind == "array":
            copied["items"] = self._type(node["items"], namespace)
        elif kind == "map":
            copied["values"] = self._type(node["values"], namespace)
        elif not (isinstance(kind, str) and kind in _PRIMITIVES):
            copied["type"] = self._type(kind, namespace)
        return copied

    def _named_type(self, full: str) -> Any:
        short = _short(full)
        if full == self._top:
            raise PolicyEngineError(f"a field refers to the stream's own record {full}; it cannot be delivered")
        if self._emitted.get(short) == full:
            return short
        if short in self._emitted:
            raise PolicyEngineError(
                f"types {self._emitted[short]} and {full} would both be {short} in the delivery namespace; "
                "rename one in the stream schema"
            )
        node = self._named.get(full)
        if node is None:
            raise PolicyEngineError(f"the stream schema uses type {full} but never defines it")
        self._emitted[short] = full
        copied = {key: value for key, value in _without_accord(node).items() if key != "namespace"}
        copied["name"] = short
        if "fields" in node:
            copied["fields"] = [self.field(inner, inner["name"], _namespace_of(full)) for inner in node["fields"]]
        return copied


def _index_named(node: Any, namespace: str, found: dict[str, Mapping[str, Any]]) -> None:
    """Record every named type under `node` by its full name, resolving namespaces as Avro does."""
    if isinstance(node, list):
        for branch in node:
            _index_named(branch, namespace, found)
    elif isinstance(node, Mapping):
        if node.get("type") in _NAMED_KINDS:
            full = _fullname(node["name"], node.get("namespace", namespace))
            found.setdefault(full, node)
            for field in node.get("fields", []):
                _index_named(field["type"], _namespace_of(full), found)
            return
        for key in ("type", "items", "values"):
            if not isinstance(node.get(key, ""), str):
                _index_named(node[key], namespace, found)


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(full: str) -> str:
    return full.rpartition(".")[0]


def _short(full: str) -> str:
    return full.rpartition(".")[2]


def _without_accord(node: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if not key.startswith("accord.")}
