"""A server started with --enable-hip-attention and a context length past the default model's
trained window (8K): a pass key prompt through /generate and the official OpenAI client, the
context length reported, and the long-context refusal without HiP. On CPU the prompt stays short
(~770 tokens) and the HiP configuration is scaled down so that the key lies outside the window and
has to be selected; the GPU measurement at 16K-64K is in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sgltest.server_process import API_KEY, ServerProcess

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
STAGE = {"stage_block_size_q": 64, "stage_block_stride_q": 2}
LAYER = {"second_stage_k": 64, "sliding_window_size": 64, "sink_token_size": 16,
         "stages": [dict(STAGE, stage_chunk_size=32, stage_k=None), dict(STAGE, stage_chunk_size=8, stage_k=128),
                    dict(STAGE, stage_chunk_size=4, stage_k=96, stage_block_stride_q=1)]}
CONFIG = {"block_sparse_block_size_q": 64, "mask_refresh_interval": [8, 4, 2], "layers": [LAYER, LAYER]}


def prompt(key: int, depth: float, n: int = 30) -> str:
    d = int(n * depth)
    return ("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. " + FILLER * d +
            f"The pass key is {key}. Remember it. {key} is the pass key. " + FILLER * (n - d) +
            "What is the pass key? The pass key is")


@pytest.fixture(scope="module")
def hip_server():
    proc = ServerProcess(["--enable-hip-attention", "--context-length", "16384", "--max-total-tokens", "8192",
                          "--hip-attention-config", json.dumps(CONFIG)], api_key=API_KEY)
    try:
        yield proc
    finally:
        proc.stop()


def test_generate_and_openai_pass_key(hip_server):
    info = hip_server.get("/get_model_info").json()
    assert "SmolLM2" in info["model_path"]
    r = hip_server.post("/generate", json={
        "text": prompt(48213, 0.2), "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
    assert r.status_code == 200, r.text
    assert "48213" in r.json()["text"], r.json()["text"]
    assert r.json()["meta_info"]["prompt_tokens"] > 700

    import openai

    client = openai.OpenAI(base_url=hip_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    out = client.completions.create(model=model, prompt=prompt(90317, 0.6), max_tokens=8, temperature=0)
    assert "90317" in out.choices[0].text, out.choices[0].text


def test_long_context_without_hip_is_refused():
    proc = subprocess.run([sys.executable, "-m", "sgl.launch_server", "--context-length", "16384"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--enable-hip-attention" in proc.stderr, proc.stderr[-2000:]
