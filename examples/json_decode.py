"""JSON decoding: build a JSON object field by field with constrained gens, or in one gen
from a JSON schema.

Usage:
    python examples/json_decode.py [--backend-url URL | --engine]
"""

import json

import sgl
from example_backend import backend_from_args, parser_with_backend_args
from sgl.ir import REGEX_FLOAT, REGEX_INT, REGEX_STR

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "[A-Za-z ]{1,20}"},
        "country": {"type": "string", "pattern": "[A-Za-z ]{1,20}"},
        "population_millions": {"type": "integer"},
    },
    "required": ["name", "country", "population_millions"],
}


@sgl.function
def city_fields(s, city):
    s += "Describe the city of " + city + " as JSON.\n"
    with s.var_scope("json_output"):
        s += "{\n"
        s += '  "name": ' + sgl.gen(regex=REGEX_STR, max_tokens=16) + ",\n"
        s += '  "population": ' + sgl.gen(regex=REGEX_INT, stop=[" ", "\n"], max_tokens=8) + ",\n"
        s += '  "latitude": ' + sgl.gen(regex=REGEX_FLOAT, stop=[" ", "\n"], max_tokens=8) + "\n"
        s += "}"


@sgl.function
def city_schema(s, city):
    s += sgl.user("Describe the city of " + city + " as JSON.")
    s += sgl.assistant(sgl.gen("json_output", json_schema=json.dumps(CITY_SCHEMA), max_tokens=64))


def main() -> None:
    args = parser_with_backend_args(__doc__).parse_args()
    with backend_from_args(args):
        fields = city_fields.run(city="Paris", temperature=0)
        print("field by field:", json.loads(fields["json_output"]))
        whole = city_schema.run(city="Tokyo", temperature=0)
        print("from a schema: ", whole["json_output"])


if __name__ == "__main__":
    main()
