"""Varied JSON schemas shared by the grammar tests and the end-to-end constrained tests."""

import jsonschema

SCHEMAS = {
    "flat_required": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
    },
    "optional_props": {
        "type": "object",
        "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}, "c": {"type": "integer"}, "d": {"type": "string", "maxLength": 4}},
        "required": ["c"],
    },
    "all_optional": {
        "type": "object",
        "properties": {"x": {"type": "integer", "maximum": -5}, "y": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 14}},
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}, "email": {"type": "string", "format": "email"}}, "required": ["id", "email"]},
            "active": {"type": "boolean"},
        },
        "required": ["user", "active"],
    },
    "array_bounds": {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 3}, "minItems": 2, "maxItems": 4},
    "array_of_objects": {
        "type": "object",
        "properties": {"items": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"]}}},
        "required": ["items"],
    },
    "enums": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "integer", "enum": [1, 2, "x", 3.5]}, "mixed": {"enum": [None, True, {"k": [1, 2]}, "a\"b"]}},
        "required": ["color", "size", "mixed"],
    },
    "number_bounds": {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "temp": {"type": "number", "exclusiveMinimum": -273.15, "maximum": 100.5},
            "price": {"type": "number", "exclusiveMinimum": 0},
            "neg": {"type": "number", "maximum": -0.25},
        },
        "required": ["ratio", "temp", "price", "neg"],
    },
    "formats": {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "time"},
            "id": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
            "site": {"type": "string", "format": "uri", "maxLength": 2083},
        },
        "required": ["when", "day", "at", "id", "ip", "site"],
    },
    "string_patterns": {
        "type": "object",
        "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}(-[0-9]{4})?$"}, "code": {"type": "string", "pattern": "^[a-z]+_[a-z]+$", "maxLength": 40}},
        "required": ["zip", "code"],
    },
    "string_lengths": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 3}, "maxItems": 3},
    "nullable_union": {
        "type": "object",
        "properties": {"v": {"anyOf": [{"type": "integer", "minimum": 100}, {"type": "null"}, {"type": "string", "enum": ["n/a"]}]}},
        "required": ["v"],
    },
    "type_list": {"type": ["integer", "boolean", "null"]},
    "tuple": {"type": "array", "prefixItems": [{"type": "string", "maxLength": 5}, {"type": "integer"}, {"const": "end"}], "items": False, "minItems": 3},
    "refs": {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}, "y": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x", "y"]}},
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
        "required": ["from", "to"],
    },
    "recursive": {
        "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9}, "kids": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
        "$ref": "#/$defs/node",
    },
    "discriminated_oneof": {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["kind", "lives"]},
            {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}, "required": ["kind", "good"]},
        ]
    },
    "allof_merge": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}, "required": ["a"]}, {"properties": {"a": {"maximum": 5}, "b": {"type": "boolean"}}, "required": ["b"]}]},
    "free_map": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 99}, "maxProperties": 3},
    "required_undeclared": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "extra"], "additionalProperties": {"type": "boolean"}},
    "unique_single": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "maxItems": 1},
    # real-world keywords generated as valid subsets (runtime/constrained/json_schema.py)
    "unique_any": {"type": "array", "items": {"type": "string", "maxLength": 3}, "uniqueItems": True},
    "pattern_properties": {"type": "object", "properties": {"x_a": {"type": "integer"}, "b": {"type": "boolean"}},
                           "patternProperties": {"^x_": {"minimum": 0, "maximum": 9}}, "required": ["x_a", "b"]},
    "pattern_map": {"type": "object", "patternProperties": {"^[a-z]{1,4}$": {"type": "integer", "minimum": 0, "maximum": 9}},
                    "additionalProperties": False, "maxProperties": 3},
    "property_names": {"type": "object", "propertyNames": {"pattern": "^[A-Z]{2}$"},
                       "additionalProperties": {"type": "boolean"}, "maxProperties": 2},
    "property_names_declared": {"type": "object", "properties": {"ok": {"type": "integer"}, "toolong": {"type": "integer"}},
                                "propertyNames": {"maxLength": 3}},
    "dependencies": {"type": "object", "properties": {"card": {"type": "integer", "minimum": 0, "maximum": 9},
                                                      "billing": {"type": "string", "maxLength": 4},
                                                      "name": {"type": "string", "maxLength": 4}},
                     "required": ["name"], "dependentRequired": {"card": ["billing"]},
                     "dependentSchemas": {"name": {"properties": {"name": {"minLength": 2}}}}},
    "if_then": {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}, "n": {"type": "integer"}},
                "required": ["kind", "n"], "if": {"properties": {"kind": {"const": "a"}}},
                "then": {"properties": {"n": {"minimum": 1, "maximum": 3}}}, "else": {"properties": {"n": {"maximum": -1}}}},
    "oneof_by_required": {"type": "object", "properties": {"radius": {"type": "integer", "minimum": 0, "maximum": 9},
                                                           "length": {"type": "integer", "minimum": 0, "maximum": 9},
                                                           "unit": {"enum": ["cm", "m"]}},
                          "oneOf": [{"required": ["radius"]}, {"required": ["length"]}, {"required": ["radius", "unit"]}]},
    "oneof_by_type": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 0, "maximum": 9}]},
    "unevaluated": {"type": "object", "allOf": [{"properties": {"a": {"type": "integer"}}}], "properties": {"b": {"type": "null"}},
                    "unevaluatedProperties": False},
    "closed_allof": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                               {"properties": {"a": {"minimum": 0}, "b": {"type": "string"}}}]},
    "not_anything": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 3}, {"not": {}}]},
    "string_formats_more": {"type": "array", "prefixItems": [{"type": "string", "format": f} for f in
                            ("duration", "json-pointer", "relative-json-pointer", "regex", "uri-template")],
                            "minItems": 5, "items": False},
    "escaped_keys": {"type": "object", "properties": {'we"ird\\key': {"type": "integer"}, "ünï cödé": {"type": "string", "maxLength": 3}}, "required": ['we"ird\\key', "ünï cödé"]},
}


def validator(schema):
    """A jsonschema validator for `schema`'s draft, with its format checker."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
