"""`python -m sgl.bench_json`: the cost of JSON-schema decoding, and what jump-forward saves.

Three runs of the same batch through sgl.Engine, in one process:
1. constrained by a JSON schema, jump-forward off: the grammar's mask cost alone;
2. unconstrained, each request forced (ignore_eos) to the length run 1 produced: the baseline;
3. constrained, jump-forward on (a second engine).
It reports time per output token of each, the overhead of 1 over 2, and the end-to-end speedup of
3 over 1. The default schema has long fixed keys, where jump-forward skips most decode steps.

Example (GPU; the tokenizer of the embedded model over an 8B-shaped model with its vocabulary):
  python -m sgl.bench_json --model-path llama-3.1-8b --load-format dummy --tokenizer-path DIR \
      --json-model-override-args '{"vocab_size": 49152}' --batch-size 1 32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import List, Optional

from sgl.runtime.server_args import ServerArgs

LONG_KEY_SCHEMA = {
    "type": "object",
    "properties": {
        "customer_identification_number": {"type": "integer", "minimum": 0, "maximum": 999999},
        "customer_membership_level_description": {"type": "string", "enum": ["bronze", "silver", "gold"]},
        "customer_account_is_currently_active": {"type": "boolean"},
        "customer_preferred_contact_channel_name": {"type": "string", "enum": ["email", "phone", "mail"]},
        "customer_short_display_name": {"type": "string", "maxLength": 12},
    },
    "required": [
        "customer_identification_number", "customer_membership_level_description",
        "customer_account_is_currently_active", "customer_preferred_contact_channel_name",
        "customer_short_display_name",
    ],
}
PROMPT = "Return the customer record as JSON."


@dataclasses.dataclass
class JsonBenchResult:
    batch_size: int
    constrained_ms_per_token: float
    unconstrained_ms_per_token: float
    mask_overhead: float  # constrained / unconstrained - 1, jump-forward off
    jump_forward_seconds: float
    no_jump_seconds: float
    jump_forward_speedup: float
    output_tokens: int


def _timed(engine, prompts: List[str], params: List[dict]):
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    return time.perf_counter() - t0, outs


def _steps(outs) -> int:
    return max(o["meta_info"]["completion_tokens"] for o in outs)


def _constrained(bs: int, schema: dict, max_new: int) -> List[dict]:
    return [{"max_new_tokens": max_new, "temperature": 0, "json_schema": json.dumps(schema)}] * bs


def measure_off(engine, bs: int, schema: dict, max_new: int) -> dict:
    """Jump-forward off: constrained, then plain decoding of the same lengths."""
    prompts = [PROMPT] * bs
    t_off, outs_off = _timed(engine, prompts, _constrained(bs, schema, max_new))
    lengths = [o["meta_info"]["completion_tokens"] for o in outs_off]
    plain = [{"max_new_tokens": n, "temperature": 0, "ignore_eos": True} for n in lengths]
    t_plain, outs_plain = _timed(engine, prompts, plain)
    return {"bs": bs, "t_off": t_off, "steps": _steps(outs_off), "t_plain": t_plain,
            "plain_steps": _steps(outs_plain), "tokens": sum(lengths)}


def combine(off: dict, t_on: float) -> JsonBenchResult:
    c_ms, u_ms = 1e3 * off["t_off"] / off["steps"], 1e3 * off["t_plain"] / off["plain_steps"]
    return JsonBenchResult(off["bs"], c_ms, u_ms, c_ms / u_ms - 1, t_on, off["t_off"], off["t_off"] / t_on, off["tokens"])


def _best(fn, repeats: int, key):
    return min((fn() for _ in range(repeats)), key=key)


def main(argv: Optional[List[str]] = None) -> List[JsonBenchResult]:
    from sgl.runtime.entry.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m sgl.bench_json")
    ServerArgs.add_cli_args(parser)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--schema-file", default=None, help="a JSON schema file (default: long fixed keys)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each measurement")
    parser.add_argument("--result-filename", default=None)
    args = parser.parse_args(argv)
    schema = json.load(open(args.schema_file)) if args.schema_file else LONG_KEY_SCHEMA
    base = ServerArgs.from_cli_args(args)
    # One engine at a time: each sizes its KV pool from the free GPU memory.
    with Engine(server_args=dataclasses.replace(base, disable_jump_forward=True)) as off:
        measure_off(off, 1, schema, 16)  # warm-up: compile the grammar, fill caches
        offs = [_best(lambda: measure_off(off, bs, schema, args.max_new_tokens), args.repeats, lambda r: r["t_off"])
                for bs in args.batch_size]
    with Engine(server_args=dataclasses.replace(base, disable_jump_forward=False)) as on:
        _timed(on, [PROMPT], _constrained(1, schema, 16))
        ons = [_best(lambda: _timed(on, [PROMPT] * bs, _constrained(bs, schema, args.max_new_tokens))[0],
                     args.repeats, lambda t: t) for bs in args.batch_size]
    results = [combine(o, t) for o, t in zip(offs, ons)]
    print(f"{'bs':>4}{'json ms/tok':>13}{'plain ms/tok':>14}{'overhead':>10}{'jf on s':>9}{'jf off s':>10}{'jf speedup':>12}")
    for r in results:
        print(f"{r.batch_size:>4}{r.constrained_ms_per_token:>13.3f}{r.unconstrained_ms_per_token:>14.3f}"
              f"{100 * r.mask_overhead:>9.1f}%{r.jump_forward_seconds:>9.3f}{r.no_jump_seconds:>10.3f}"
              f"{r.jump_forward_speedup:>11.2f}x")
    if args.result_filename:
        with open(args.result_filename, "a") as f:
            for r in results:
                f.write(json.dumps(dataclasses.asdict(r)) + "\n")
    return results


if __name__ == "__main__":
    main()
