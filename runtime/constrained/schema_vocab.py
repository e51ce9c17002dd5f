"""Which JSON Schema keywords the compiler reads, ignores or refuses.

JSON Schema treats every keyword outside its vocabularies as an annotation that validators
ignore, and real schemas carry many (draft-4's ``id``, Kubernetes' ``x-kubernetes-*``,
Snowplow's ``self``, editor hints, typos such as ``descrption``). ``known_keywords`` drops them
before the compiler looks at a schema. Of the standard keywords, the annotations are ignored too;
the assertions are enforced, or refused with a ValueError naming the keyword when no generated
subset can be proven valid (``UNSUPPORTED_KEYWORDS``).
"""

from typing import Any, Dict

__all__ = ["ANNOTATIONS", "UNSUPPORTED_KEYWORDS", "VOCABULARY", "known_keywords"]

# Standard keywords that never constrain a value (meta-data, content, identifiers, containers of
# definitions). ``id`` is draft 4's ``$id``; like ``$id`` at the root it only names the schema.
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "id", "$comment",
    "deprecated", "readOnly", "writeOnly", "discriminator", "$anchor", "$defs", "definitions",
    "$vocabulary", "$dynamicAnchor", "$recursiveAnchor",
    # content vocabulary: annotations since draft 2019-09 (validators do not assert them)
    "contentEncoding", "contentMediaType", "contentSchema",
})

# Assertion and applicator keywords the compiler enforces (json_schema.py, json_containers.py).
ENFORCED = frozenset({
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "properties", "required", "additionalProperties", "minProperties", "maxProperties",
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
    "unevaluatedProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "if", "then", "else",
})

# Standard assertions no generated subset is proven to satisfy in general: refused by name.
UNSUPPORTED_KEYWORDS = frozenset({
    "multipleOf", "contains", "minContains", "maxContains", "not", "unevaluatedItems",
    "$dynamicRef", "$recursiveRef",
})

VOCABULARY = ANNOTATIONS | ENFORCED | UNSUPPORTED_KEYWORDS


def known_keywords(schema: Dict[str, Any]) -> Dict[str, Any]:
    """``schema`` without the keys JSON Schema does not define (they are annotations)."""
    if all(key in VOCABULARY for key in schema):
        return schema
    return {key: value for key, value in schema.items() if key in VOCABULARY}
