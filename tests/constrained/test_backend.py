"""The compile cache: futures, thread pool, LRU reuse, per-request matchers, errors, time-outs."""

import json
import random
import threading
import time

import pytest

from sgl.runtime.constrained import GrammarBackend, TokenVocabulary
from sgl.runtime.constrained.base import BaseGrammarBackend


class _SlowBackend(BaseGrammarBackend):
    """Base machinery with a fake compiler: records the thread and can be made slow or fail."""

    def __init__(self, delay: float = 0.0, **kw):
        super().__init__(**kw)
        self.delay = delay
        self.threads = []
        self.calls = 0

    def compile(self, kind, text):
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if text == "bad":
            raise ValueError("bad grammar")
        if text == "crash":
            raise RuntimeError("library crashed")
        return (kind, text)

    def new_grammar(self, compiled):
        return {"compiled": compiled}


def test_compiles_off_the_caller_thread_and_caches():
    be = _SlowBackend(delay=0.2, num_threads=2)
    try:
        t0 = time.perf_counter()
        fut = be.get_or_compile("regex", "a+")
        assert time.perf_counter() - t0 < 0.1  # returned before the compile finished
        first = fut.result(timeout=5)
        second = be.get_or_compile("regex", "a+").result(timeout=5)
        assert first["compiled"] is second["compiled"] and first is not second
        assert be.calls == 1 and be.threads[0].startswith("grammar-compile")
        assert be.get_cached("regex", "a+")["compiled"] == ("regex", "a+")
        assert be.get_cached("regex", "b+") is None
    finally:
        be.shutdown()


def test_errors_fail_only_their_request():
    be = _SlowBackend(num_threads=2)
    try:
        bad, good, crash = (be.get_or_compile("json", t) for t in ("bad", "good", "crash"))
        with pytest.raises(ValueError, match="bad grammar"):
            bad.result(timeout=5)
        with pytest.raises(ValueError, match="RuntimeError: library crashed"):
            crash.result(timeout=5)
        assert good.result(timeout=5)["compiled"] == ("json", "good")
    finally:
        be.shutdown()


def test_timeout_resolves_the_future_with_an_error():
    be = _SlowBackend(delay=1.0, compile_timeout_s=0.1)
    try:
        with pytest.raises(ValueError, match="timed out after 0.1 s"):
            be.get_or_compile("regex", "slow").result(timeout=5)
        time.sleep(1.1)  # the compile finishes in the background and stays cached
        assert be.get_or_compile("regex", "slow").result(timeout=5)["compiled"] == ("regex", "slow")
    finally:
        be.shutdown()


def test_lru_eviction_and_reset():
    be = _SlowBackend(cache_size=2)
    try:
        for text in ("a", "b", "a", "c"):  # "b" is least recently used when "c" arrives
            be.get_or_compile("regex", text).result(timeout=5)
        assert be.calls == 3
        be.get_or_compile("regex", "a").result(timeout=5)
        assert be.calls == 3
        be.get_or_compile("regex", "b").result(timeout=5)
        assert be.calls == 4
        be.reset()
        be.get_or_compile("regex", "a").result(timeout=5)
        assert be.calls == 5
    finally:
        be.shutdown()


@pytest.mark.parametrize("kind, text, reason", [("yaml", "x", "unknown grammar kind"), ("regex", 5, "must be a string")])
def test_bad_arguments_raise_immediately(kind, text, reason):
    be = _SlowBackend()
    try:
        with pytest.raises(ValueError, match=reason):
            be.get_or_compile(kind, text)
    finally:
        be.shutdown()


def test_real_backend_kinds(backend):
    assert backend.get_or_compile("choices", json.dumps(["yes", "no"])).result(timeout=60).compiled.regex == "(?:yes|no)"
    with pytest.raises(ValueError, match="xgrammar"):
        backend.get_or_compile("ebnf", 'root ::= "a"').result(timeout=60)
    with pytest.raises(ValueError, match="JSON list"):
        backend.get_or_compile("choices", "[oops").result(timeout=60)


def test_concurrent_requests_share_one_compile(backend):
    schema = json.dumps({"type": "object", "properties": {"k": {"type": "integer", "minimum": 3}}, "required": ["k"]})
    futures = [backend.get_or_compile("json", schema) for _ in range(8)]
    grammars = [f.result(timeout=120) for f in futures]
    assert len({id(g.compiled) for g in grammars}) == 1
    assert len({id(g) for g in grammars}) == 8


def test_synthetic_byte_vocabulary():
    """A hand-made vocabulary (as the 128K benchmark uses) works end to end."""
    tokens = [None, b"<eos>"] + [bytes([b]) for b in range(32, 127)] + [b"ab", b"abc", b'{"', b'":']
    vocab = TokenVocabulary.from_bytes(tokens, eos_token_ids=[1], vocab_size=200)
    be = GrammarBackend(vocab, num_threads=1)
    try:
        g = be.get_or_compile("regex", r"(ab)+c?").result(timeout=60)
        mask = g.allocate_vocab_mask(200, 1)
        rng = random.Random(0)
        from sgl.runtime.constrained.vocab_mask import unpack_bitmask

        out = b""
        while not g.is_terminated():
            mask.fill_(-1)
            g.fill_vocab_mask(mask, 0)
            allowed = [i for i, ok in enumerate(unpack_bitmask(mask, 200)[0].tolist()) if ok]
            assert all(i < len(tokens) for i in allowed)
            tid = rng.choice(allowed)
            g.accept_token(tid)
            out += tokens[tid] if tid != 1 else b""
        assert out.decode().startswith("ab") and out.rstrip(b"c").replace(b"ab", b"") == b""
    finally:
        be.shutdown()


def test_real_timeout(tokenizer):
    be = GrammarBackend(tokenizer, 49152, num_threads=1, compile_timeout_s=0.001)
    try:
        # Any real compile walks the 49K vocabulary for far longer than 1 ms; a small grammar keeps
        # the abandoned compile thread short, since the interpreter joins it at exit.
        schema = json.dumps({"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3})
        with pytest.raises(ValueError, match="timed out"):
            be.get_or_compile("json", schema).result(timeout=60)
    finally:
        be.shutdown()
