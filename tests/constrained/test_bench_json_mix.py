"""bench_json --batch-mix: the mixes run in rounds (each mix once per round), and each mix's best
round is reported, so a drift of the machine's speed reaches every mix alike."""

from sgl.runtime.bench import json_decode


class _Engine:
    """Answers every batch at once; records the order of the mixes it was given."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        constrained = sum("json_schema" in p or "regex" in p for p in params)
        self.calls.append((len(prompts), constrained, "regex" in params[0]))
        return [{"meta_info": {"completion_tokens": p["max_new_tokens"]}} for p in params]


def test_batch_mix_runs_rounds_of_every_mix(monkeypatch):
    engine = _Engine()
    clock = iter(range(1000))
    monkeypatch.setattr(json_decode.time, "perf_counter", lambda: float(next(clock)))
    rows = json_decode.batch_mix(engine, bs=4, max_new=8, repeats=3)
    assert [name for name, _, _ in rows] == ["all free", "1 regex + free", "1 json + free", "all json"]
    timed = engine.calls[1:]  # after the warm-up
    per_round = [(4, 0, False), (4, 1, True), (4, 1, False), (4, 4, False)]
    assert timed == per_round * 3
    assert all(t == 1.0 and tokens == 32 for _, t, tokens in rows)
