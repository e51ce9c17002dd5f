"""`python -m sgl.bench_json_corpus`: real-world JSON schemas through the engine, end to end.

Every schema of a corpus file (default: tests/data/jsonschemabench_sample.json, 120 schemas from
JSONSchemaBench) is sent as one request of a single batch, sampled at --temperature (default 1.0).
Each outcome is one of: refused (HTTP 400's reason, the keyword in it), cut at max_new_tokens,
invalid (finished, but not JSON valid under the schema with `jsonschema`'s format checker) or
valid. Prints the table per corpus subset and the refusal reasons; --result-filename appends one
JSON line per schema.

Example (CPU, the embedded model):  python -m sgl.bench_json_corpus --max-new-tokens 768
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import time
from typing import Dict, List, Optional

from sgl.runtime.server_args import ServerArgs

OUTCOMES = ("valid", "invalid", "cut", "refused")
PROMPT_SCHEMA_CHARS = 1200


def default_corpus() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "tests", "data", "jsonschemabench_sample.json")


def prompt_for(schema: dict) -> str:
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > PROMPT_SCHEMA_CHARS:
        text = text[:PROMPT_SCHEMA_CHARS] + " ..."
    return f"Write one JSON document that is valid under this JSON schema.\nSchema: {text}\nJSON document:"


def classify(schema: dict, result: dict) -> Dict[str, str]:
    """{"outcome": one of OUTCOMES, "detail": reason or validation error}."""
    import jsonschema

    reason = result["meta_info"].get("finish_reason") or {}
    if reason.get("type") == "abort":
        return {"outcome": "refused", "detail": reason.get("message", "")}
    if reason.get("type") == "length":
        return {"outcome": "cut", "detail": f"{result['meta_info']['completion_tokens']} tokens"}
    try:
        value = json.loads(result["text"])
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls(schema, format_checker=cls.FORMAT_CHECKER).validate(value)
    except (ValueError, jsonschema.ValidationError) as e:
        return {"outcome": "invalid", "detail": str(e).splitlines()[0][:300]}
    return {"outcome": "valid", "detail": ""}


def refusal_key(detail: str) -> str:
    m = re.search(r"unsupported JSON schema (keyword|format): ([^\s(]+)", detail)
    if m:
        return f"{m.group(1)} {m.group(2)}"
    return detail.split(":")[0][:80]


def run(engine, items: List[dict], max_new_tokens: int, temperature: float, seed: Optional[int]) -> List[dict]:
    prompts = [prompt_for(it["schema"]) for it in items]
    params = []
    for i, it in enumerate(items):
        p = {"max_new_tokens": max_new_tokens, "temperature": temperature, "json_schema": json.dumps(it["schema"])}
        if seed is not None:
            p["seed"] = seed + i
        params.append(p)
    results = engine.generate(prompts, params)
    rows = []
    for it, res in zip(items, results):
        rows.append({"subset": it["subset"], "path": it["path"], **classify(it["schema"], res),
                     "completion_tokens": res["meta_info"].get("completion_tokens", 0)})
    return rows


def report(rows: List[dict]) -> None:
    by_subset = collections.defaultdict(collections.Counter)
    for r in rows:
        by_subset[r["subset"]][r["outcome"]] += 1
        by_subset["all"][r["outcome"]] += 1
    print(f"{'subset':<18}{'schemas':>8}" + "".join(f"{o:>9}" for o in OUTCOMES) + f"{'accepted':>10}")
    for subset in sorted(by_subset, key=lambda s: (s == "all", s)):
        c = by_subset[subset]
        n = sum(c.values())
        accepted = n - c["refused"]
        print(f"{subset:<18}{n:>8}" + "".join(f"{c[o]:>9}" for o in OUTCOMES) + f"{100 * accepted / n:>9.1f}%")
    reasons = collections.Counter(refusal_key(r["detail"]) for r in rows if r["outcome"] == "refused")
    for key, n in reasons.most_common():
        print(f"  refused {n} x {key}")
    for r in rows:
        if r["outcome"] == "invalid":
            print(f"  invalid {r['path']}: {r['detail']}")


def main(argv: Optional[List[str]] = None) -> List[dict]:
    from sgl.runtime.entry.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m sgl.bench_json_corpus")
    ServerArgs.add_cli_args(parser)
    parser.add_argument("--corpus", default=None, help="corpus file (default: the JSONSchemaBench sample)")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="request i samples with seed + i")
    parser.add_argument("--limit", type=int, default=None, help="only the first N schemas")
    parser.add_argument("--result-filename", default=None)
    args = parser.parse_args(argv)
    corpus = json.load(open(args.corpus or default_corpus()))
    items = corpus["items"][: args.limit]
    t0 = time.perf_counter()
    with Engine(server_args=ServerArgs.from_cli_args(args)) as engine:
        rows = run(engine, items, args.max_new_tokens, args.temperature, args.seed)
    print(f"{len(items)} schemas from {corpus.get('source', 'the corpus')} in {time.perf_counter() - t0:.0f} s, "
          f"temperature {args.temperature}, max_new_tokens {args.max_new_tokens}")
    report(rows)
    if args.result_filename:
        with open(args.result_filename, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
