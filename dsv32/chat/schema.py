"""A small JSON Schema subset: checking tool schemas, and checking parsed tool arguments against them.

Supported keywords: `type` (a name or a list of names), `enum`, `const`, `properties`, `required`,
`additionalProperties` (bool or schema), `items` (one schema), `anyOf`, `oneOf`, `allOf`.
Left out, and so never reported: `$ref`/`$defs`, string formats and patterns, numeric and length
bounds, `prefixItems`, `patternProperties`, conditionals. A value that passes here may still fail a
full validator on those keywords; one that fails here fails every validator.
"""

from __future__ import annotations

from typing import Any

JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    if isinstance(value, bool):  # bool is an int subclass in Python, never a JSON number
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    return False


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def schema_problem(schema: Any, where: str) -> str | None:
    """Why `schema` is not a usable schema of the supported subset, or None when it is."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{where}: expected a JSON schema object, got {type(schema).__name__}"
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        for name in names:
            if name not in JSON_TYPES:
                return f"{where}.type: unknown type {name!r} (expected one of {', '.join(JSON_TYPES)})"
    if "properties" in schema:
        props = schema["properties"]
        if not isinstance(props, dict):
            return f"{where}.properties: expected an object mapping names to schemas"
        for key, sub in props.items():
            problem = schema_problem(sub, f"{where}.properties.{key}")
            if problem:
                return problem
    if "required" in schema:
        req = schema["required"]
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            return f"{where}.required: expected a list of property names"
    for key in ("items", "additionalProperties"):
        if key in schema:
            problem = schema_problem(schema[key], f"{where}.{key}")
            if problem:
                return problem
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            subs = schema[key]
            if not isinstance(subs, list) or not subs:
                return f"{where}.{key}: expected a non-empty list of schemas"
            for i, sub in enumerate(subs):
                problem = schema_problem(sub, f"{where}.{key}[{i}]")
                if problem:
                    return problem
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{where}.enum: expected a list"
    return None


def value_problem(value: Any, schema: Any, where: str) -> str | None:
    """Why `value` does not satisfy `schema` (supported subset), or None when it does."""
    if schema is True or schema is None:
        return None
    if schema is False:
        return f"{where}: no value is allowed here"
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, n) for n in names):
            return f"{where}: expected {' or '.join(names)}, got {_type_name(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']!r}"
    if "const" in schema and value != schema["const"]:
        return f"{where}: expected {schema['const']!r}"
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                return f"{where}: missing required property {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, sub_value in value.items():
            if key in props:
                problem = value_problem(sub_value, props[key], f"{where}.{key}")
            else:
                problem = value_problem(sub_value, extra, f"{where}.{key}")
                if extra is False:
                    problem = f"{where}: unexpected property {key!r}"
            if problem:
                return problem
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = value_problem(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    if "allOf" in schema:
        for sub in schema["allOf"]:
            problem = value_problem(value, sub, where)
            if problem:
                return problem
    if "anyOf" in schema:
        if all(value_problem(value, sub, where) for sub in schema["anyOf"]):
            return f"{where}: matches none of the anyOf schemas"
    if "oneOf" in schema:
        matches = sum(value_problem(value, sub, where) is None for sub in schema["oneOf"])
        if matches != 1:
            return f"{where}: matches {matches} of the oneOf schemas, expected exactly 1"
    return None
