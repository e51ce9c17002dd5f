"""`python -m sgl.bench_json`: the cost of JSON-schema decoding, and what jump-forward saves.

With `--batch-mix`: what constrained requests cost the batch they run in. One engine runs 64
greedy `ignore_eos` requests of 128 new tokens (sizes set by --batch-size / --max-new-tokens) as
all free text; 63 free + 1 regex; 63 free + 1 JSON schema with a free string; all under that
schema; then a second engine without the overlap scheduler runs the all-free batch. --repeats
rounds of the four mixes in turn, best of the rounds per mix; grammars compiled by a warm-up first.

Three runs of the same batch through sgl.Engine, in one process:
1. constrained by a JSON schema, jump-forward off: the grammar's mask cost alone;
2. unconstrained, each request forced (ignore_eos) to the length run 1 produced: the baseline;
3. constrained, jump-forward on (a second engine).
It reports time per output token of each, the overhead of 1 over 2, and the end-to-end speedup of
3 over 1, plus the schema's compile time (its first request less a warm one). With
`--compare-grammar-backends outlines xgrammar` all of it runs once per backend, one table. The
default schema has long fixed keys, where jump-forward skips most decode steps.

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
    grammar_backend: str = ""
    compile_seconds: float = float("nan")  # first request of the schema (compile + 16 tokens) minus a warm one


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


MIX_REGEX = "[a-z ]{120,200}"
# minLength keeps the JSON requests inside the free string for all 128 tokens (the embedded model
# would otherwise close it after a few words and finish early)
FREE_STRING_SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 400, "maxLength": 600}},
                      "required": ["story"]}
MIX_PROMPT = "Write a short story about a lighthouse keeper."


@dataclasses.dataclass
class MixRow:
    name: str
    seconds: float
    output_tokens: int
    vs_all_free: float  # seconds / all-free seconds


def mix_params(bs: int, max_new: int, constrained: int, kind: str, schema: dict) -> List[dict]:
    """`constrained` requests of `kind` ("regex" or "json") first, the rest free text."""
    base = {"max_new_tokens": max_new, "temperature": 0, "ignore_eos": True}
    extra = {"regex": MIX_REGEX} if kind == "regex" else {"json_schema": json.dumps(schema)}
    return [dict(base, **extra) if i < constrained else dict(base) for i in range(bs)]


def batch_mix(engine, bs: int, max_new: int, repeats: int, schema: dict = FREE_STRING_SCHEMA) -> List[tuple]:
    """(name, seconds, output tokens) of each mix, best of `repeats`."""
    mixes = [("all free", 0, "json"), ("1 regex + free", 1, "regex"), ("1 json + free", 1, "json"),
             ("all json", bs, "json")]
    _timed(engine, [MIX_PROMPT] * 3, mix_params(2, 8, 1, "regex", schema) + mix_params(1, 8, 1, "json", schema))
    # Rounds of every mix in turn (not each mix's repeats back to back), best of the rounds: a drift
    # of the machine's speed during the run then reaches every mix alike.
    best = {}
    for _ in range(repeats):
        for name, n, kind in mixes:
            t, outs = _timed(engine, [MIX_PROMPT] * bs, mix_params(bs, max_new, n, kind, schema))
            if name not in best or t < best[name][0]:
                best[name] = (t, sum(o["meta_info"]["completion_tokens"] for o in outs))
    return [(name, *best[name]) for name, _, _ in mixes]


def run_batch_mix(base: ServerArgs, bs: int, max_new: int, repeats: int, schema: dict = FREE_STRING_SCHEMA) -> List[MixRow]:
    from sgl.runtime.entry.engine import Engine

    with Engine(server_args=base) as engine:
        rows = batch_mix(engine, bs, max_new, repeats, schema)
    with Engine(server_args=dataclasses.replace(base, disable_overlap_schedule=True)) as plain:
        params = mix_params(bs, max_new, 0, "json", schema)
        t, outs = _best(lambda: _timed(plain, [MIX_PROMPT] * bs, params), repeats, lambda r: r[0])
        rows.append(("all free, no overlap", t, sum(o["meta_info"]["completion_tokens"] for o in outs)))
    free = rows[0][1]
    result = [MixRow(name, t, n, t / free) for name, t, n in rows]
    print(f"batch {bs} x {max_new} new tokens, greedy, ignore_eos, best of {repeats}")
    print(f"{'mix':<24}{'seconds':>9}{'out tokens':>12}{'vs free':>9}")
    for r in result:
        print(f"{r.name:<24}{r.seconds:>9.3f}{r.output_tokens:>12}{r.vs_all_free:>8.2f}x")
    return result


def _best(fn, repeats: int, key):
    return min((fn() for _ in range(repeats)), key=key)


def main(argv: Optional[List[str]] = None) -> List[JsonBenchResult]:
    parser = argparse.ArgumentParser(prog="python -m sgl.bench_json")
    ServerArgs.add_cli_args(parser)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--schema-file", default=None, help="a JSON schema file (default: long fixed keys)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each measurement")
    parser.add_argument("--result-filename", default=None)
    parser.add_argument("--compare-grammar-backends", nargs="+", choices=["outlines", "xgrammar"], default=None,
                        help="run the measurement once per grammar backend (e.g. outlines xgrammar), one table")
    parser.add_argument("--batch-mix", action="store_true",
                        help="time free, regex and JSON requests batched together (module docstring)")
    args = parser.parse_args(argv)
    schema = json.load(open(args.schema_file)) if args.schema_file else LONG_KEY_SCHEMA
    base = ServerArgs.from_cli_args(args)
    if args.batch_mix:
        mix_schema = schema if args.schema_file else FREE_STRING_SCHEMA
        results = run_batch_mix(base, args.batch_size[0], args.max_new_tokens, args.repeats, mix_schema)
        _write(args.result_filename, results)
        return results
    results = []
    for backend in args.compare_grammar_backends or [base.grammar_backend]:
        results += run_default(dataclasses.replace(base, grammar_backend=backend), schema, args.batch_size,
                               args.max_new_tokens, args.repeats)
    print(f"{'backend':<10}{'compile s':>10}{'bs':>4}{'json ms/tok':>13}{'plain ms/tok':>14}{'overhead':>10}"
          f"{'jf on s':>9}{'jf off s':>10}{'jf speedup':>12}")
    for r in results:
        print(f"{r.grammar_backend:<10}{r.compile_seconds:>10.3f}{r.batch_size:>4}{r.constrained_ms_per_token:>13.3f}"
              f"{r.unconstrained_ms_per_token:>14.3f}{100 * r.mask_overhead:>9.1f}%{r.jump_forward_seconds:>9.3f}"
              f"{r.no_jump_seconds:>10.3f}{r.jump_forward_speedup:>11.2f}x")
    _write(args.result_filename, results)
    return results


def run_default(base: ServerArgs, schema: dict, batch_sizes: List[int], max_new: int, repeats: int) -> List[JsonBenchResult]:
    """The three runs of the module docstring on one grammar backend (``base.grammar_backend``)."""
    from sgl.runtime.entry.engine import Engine

    # One engine at a time: each sizes its KV pool from the free GPU memory.
    with Engine(server_args=dataclasses.replace(base, disable_jump_forward=True)) as off:
        cold = _timed(off, [PROMPT], _constrained(1, schema, 16))[0]  # compiles the grammar
        warm = _timed(off, [PROMPT], _constrained(1, schema, 16))[0]
        offs = [_best(lambda: measure_off(off, bs, schema, max_new), repeats, lambda r: r["t_off"])
                for bs in batch_sizes]
    with Engine(server_args=dataclasses.replace(base, disable_jump_forward=False)) as on:
        _timed(on, [PROMPT], _constrained(1, schema, 16))
        ons = [_best(lambda: _timed(on, [PROMPT] * bs, _constrained(bs, schema, max_new))[0], repeats, lambda t: t)
               for bs in batch_sizes]
    return [dataclasses.replace(combine(o, t), grammar_backend=base.grammar_backend, compile_seconds=cold - warm)
            for o, t in zip(offs, ons)]


def _write(filename: Optional[str], results) -> None:
    if filename:
        with open(filename, "a") as f:
            for r in results:
                f.write(json.dumps(dataclasses.asdict(r)) + "\n")


if __name__ == "__main__":
    main()
