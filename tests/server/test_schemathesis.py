"""Property-based fuzzing of every route in /openapi.json: whatever the body, never a 5xx.

Bounded: 40 examples per operation (about 200 requests over the body-taking routes), and each
generated request is capped to a few new tokens before it is sent, so generation stays cheap on CPU.
Out-of-range values are left alone: they must come back as 400s.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

MAX_TOKENS = 4
MAX_EXAMPLES = 40
CAPS = {"min_new_tokens": MAX_TOKENS, "min_tokens": MAX_TOKENS, "n": 2, "top_logprobs_num": 5}


@pytest.fixture(scope="session")
def api_schema(server):
    from schemathesis import GenerationMode
    from schemathesis.config import SchemathesisConfig

    config = SchemathesisConfig()
    project = config.projects.default
    # Fuzzing only: the coverage phase alone would send thousands of requests.
    project.phases.update(phases=["fuzzing"])
    project.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES)
    return schemathesis.openapi.from_url(server.url + "/openapi.json", headers=server.headers, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


def _number(value):
    """The number the server would read from a JSON value (pydantic also accepts "12" and 12.0)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _cap(params: dict, token_fields: tuple) -> None:
    """Cap generation cost in one dict of sampling fields; invalid values stay invalid."""
    for name in token_fields:
        value = params.get(name)
        number = _number(value)
        if value is None or (number is not None and number > MAX_TOKENS):
            params[name] = MAX_TOKENS  # absent / null would mean 16, 128 or the whole context
    for name, cap in CAPS.items():
        number = _number(params.get(name))
        if number is not None and number > cap:
            params[name] = cap


def bound_cost(body) -> None:
    if not isinstance(body, dict):
        return
    if "messages" in body:
        _cap(body, ("max_tokens", "max_completion_tokens"))
    elif "prompt" in body:
        _cap(body, ("max_tokens",))
    elif "text" in body or "input_ids" in body:
        sampling = body.setdefault("sampling_params", {})
        for params in sampling if isinstance(sampling, list) else [sampling]:
            if isinstance(params, dict):
                _cap(params, ("max_new_tokens",))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case, server):
    bound_cost(case.body)
    response = case.call(headers=server.headers, timeout=120)
    assert response.status_code < 500, f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text}"


# ---- plausible requests ------------------------------------------------------------------------
# Schema-driven cases are mostly rejected early (no prompt, unknown ids); these stay close to valid
# requests so the sampling, logprob and stop paths in the scheduler get fuzzed too.
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_floats = st.floats(-3, 3, allow_nan=False)
SAMPLING = st.fixed_dictionaries({}, optional={
    "max_new_tokens": st.integers(-2, MAX_TOKENS), "min_new_tokens": st.integers(-1, MAX_TOKENS),
    "temperature": st.one_of(st.just(0), _floats), "top_p": st.floats(-0.1, 1.2), "top_k": st.integers(-2, 60000),
    "min_p": st.floats(-0.1, 1.1), "frequency_penalty": _floats, "presence_penalty": _floats,
    "repetition_penalty": st.floats(-0.5, 2.5), "ignore_eos": st.booleans(), "no_stop_trim": st.booleans(),
    "skip_special_tokens": st.booleans(), "n": st.integers(0, 3), "seed": st.integers(-5, 2**40),
    "stop": st.one_of(st.none(), st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3)),
    "stop_token_ids": st.lists(st.integers(-5, 50000), max_size=3),
})
PROMPT = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(max_size=40)),
    st.builds(lambda t: {"text": t}, st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3)),
    st.builds(lambda ids: {"input_ids": ids}, st.lists(st.integers(-2, 49160), max_size=20)),
)
EXTRAS = st.fixed_dictionaries({}, optional={
    "return_logprob": st.booleans(), "logprob_start_len": st.integers(-2, 10), "top_logprobs_num": st.integers(-1, 30),
    "stream": st.booleans(), "return_text_in_logprobs": st.booleans(),
})
BODIES = st.builds(lambda p, s, e: {**p, "sampling_params": {"max_new_tokens": MAX_TOKENS, **s}, **e},
                   PROMPT, SAMPLING, EXTRAS)


@given(body=BODIES)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_plausible_generate_requests(server, body):
    response = server.post("/generate", json=body, timeout=120)
    assert response.status_code in (200, 400), f"{body!r} -> {response.status_code} {response.text}"
    if response.status_code == 400:
        assert response.json()["error"]["message"]
    elif body.get("stream"):
        assert response.text.rstrip().endswith("data: [DONE]"), response.text
    else:
        assert "meta_info" in str(response.json())
    assert requests_ok(server)


def requests_ok(server) -> bool:
    """The runtime is still alive after the request."""
    return server.get("/health", timeout=30).status_code == 200
