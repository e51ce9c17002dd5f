"""API speculative execution for completion models (`@sgl.function(num_api_spec_tokens=N)`).

One backend call generates at least N tokens past the current text, ignoring stop strings;
the program's following gens are then cut from that speculated text at their stop strings,
and constant text that matches the speculation is consumed from it. This saves round trips
(and prompt tokens) on pay-per-call APIs. Chat-model speculation lives in the OpenAI backend.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from sgl.sampling import SglSamplingParams, stop_list


def speculative_gen(s: Any, params: SglSamplingParams) -> Tuple[str, Dict[str, Any]]:
    """Serve one gen of executor `s` from its speculated text, regenerating when needed."""
    stops = [stop for stop in stop_list(params.stop) if stop]
    limit = params.max_new_tokens
    meta: Dict[str, Any] = {}
    if not stops:
        if len(s.speculated_text) < limit:
            meta = _regenerate(s, params)
        return _take(s, limit), meta
    if not s.speculated_text:
        meta = _regenerate(s, params)
    cut = _first_stop(s.speculated_text, stops)
    if cut < 0:
        cut = min(limit, len(s.speculated_text))
    return _take(s, cut), meta


def _regenerate(s: Any, params: SglSamplingParams) -> Dict[str, Any]:
    params = params.clone()
    params.max_new_tokens = max(params.max_new_tokens, s.num_api_spec_tokens)
    params.stop = ()
    s.speculated_text, meta = s.backend.generate(s, params)
    return meta


def _first_stop(text: str, stops: list) -> int:
    positions = [text.find(stop) for stop in stops]
    found = [pos for pos in positions if pos >= 0]
    return min(found) if found else -1


def _take(s: Any, count: int) -> str:
    # SGLang cuts by characters here (the speculated text is not tokenized client-side).
    taken, s.speculated_text = s.speculated_text[:count], s.speculated_text[count:]
    return taken
