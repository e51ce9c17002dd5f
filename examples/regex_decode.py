"""Regex-constrained generation: the server only lets the model write text matching the regex.

Usage:
    python examples/regex_decode.py [--backend-url URL | --engine]
"""

import re

import sgl
from example_backend import backend_from_args, parser_with_backend_args

IP = r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"
DATE = r"\d{4}-\d{2}-\d{2}"


@sgl.function
def facts(s):
    s += "Q: What is the IP address of the Google DNS servers?\n"
    s += "A: " + sgl.gen("ip", regex=IP, max_tokens=24) + "\n"
    s += "Q: When did the Apollo 11 mission land on the Moon? Answer as YYYY-MM-DD.\n"
    s += "A: " + sgl.gen("date", regex=DATE, max_tokens=16) + "\n"
    s += "Q: Is water wet?\nA: " + sgl.gen("yes_no", dtype=bool) + "\n"


def main() -> None:
    args = parser_with_backend_args(__doc__).parse_args()
    with backend_from_args(args):
        state = facts.run(temperature=0)
        print("ip   =", state["ip"], bool(re.fullmatch(IP, state["ip"])))
        print("date =", state["date"], bool(re.fullmatch(DATE, state["date"])))
        print("bool =", state["yes_no"])


if __name__ == "__main__":
    main()
