"""A deterministic in-process engine with SGLang's `Engine.generate` contract, for tests.

`FakeEngine` returns `/generate`-shaped result dicts: text, finish_reason, token counts,
cached_tokens from a real prefix trie, input/output logprobs (SGLang v0.4 layout), stop strings
and stop token ids, min/max token limits, regex and JSON-schema outputs. Streams yield the new
text of each step (as SGLang's Engine does). Answers come from
`responder(prompt, sampling_params) -> str | None` when given, else from a deterministic word
generator seeded by the prompt.

It lets frontend tests control the model's answers and inspect what reached the engine; the
conformance suite runs on the real engine (tests/lang/conftest.py). `sgltest.fake_server` serves
it through the real HTTP app.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from sgltest.fake_grammar import sample_json, sample_regex

EOS_ID = 0
_TOKEN_RE = re.compile(r"<\|[^|>]*\|>|\s*[A-Za-z0-9_]+|\s*[^\sA-Za-z0-9_]|\s+")
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")

Responder = Callable[[str, Dict[str, Any]], Optional[str]]


class FakeTokenizer:
    """Words (with their leading whitespace), punctuation and <|special|> tokens.

    It also has what the HTTP server asks of a Hugging Face tokenizer (`chat_template`,
    `apply_chat_template`, `batch_decode`), so the real app can serve a FakeEngine.
    """

    def __init__(self, chat_template: Optional[str] = None) -> None:
        self.chat_template = chat_template
        self._ids: Dict[str, int] = {}
        self._texts: Dict[int, str] = {EOS_ID: ""}
        self._lock = threading.Lock()

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return [self._id(piece) for piece in _TOKEN_RE.findall(text)]  # there is no BOS to add

    def decode(self, ids: List[int]) -> str:
        return "".join(self._texts.get(i, "") for i in ids)

    def batch_decode(self, batch: List[List[int]]) -> List[str]:
        return [self.decode(ids) for ids in batch]

    def apply_chat_template(self, messages: List[Dict[str, Any]], chat_template: Optional[str] = None,
                            tokenize: bool = False, add_generation_prompt: bool = False, **extra: Any) -> Any:
        from sgl.jinja_template import _compile  # the frontend's renderer: transformers' options

        source = chat_template or self.chat_template
        if not source:
            raise ValueError("the fake tokenizer has no chat template")
        text = _compile(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                       bos_token="", eos_token="", **extra)
        return self.encode(text) if tokenize else text

    def token_text(self, token_id: int) -> str:
        return self._texts.get(token_id, "")

    def _id(self, piece: str) -> int:
        with self._lock:
            if piece not in self._ids:
                token_id = 1000 + len(self._ids)
                self._ids[piece] = token_id
                self._texts[token_id] = piece
            return self._ids[piece]


class PrefixTrie:
    """Token-id trie standing in for the radix cache (reports matched prefix lengths)."""

    def __init__(self) -> None:
        self._root: Dict[int, dict] = {}
        self._lock = threading.Lock()

    def match(self, ids: List[int]) -> int:
        with self._lock:
            node, depth = self._root, 0
            for token in ids:
                if token not in node:
                    break
                node, depth = node[token], depth + 1
            return depth

    def insert(self, ids: List[int]) -> None:
        with self._lock:
            node = self._root
            for token in ids:
                node = node.setdefault(token, {})

    def clear(self) -> None:
        with self._lock:
            self._root = {}


def fake_logprob(prev_id: int, token_id: int) -> float:
    """A stable pseudo logprob in [-3.01, -0.01] for `token_id` after `prev_id`."""
    return -(zlib.crc32(f"{prev_id}:{token_id}".encode()) % 3000) / 1000.0 - 0.01


class FakeEngine:
    def __init__(
        self,
        responder: Optional[Responder] = None,
        chat_template: Optional[str] = None,
        model_path: str = "fake/fake-model",
        delay: float = 0.0,
        supports_images: bool = False,
    ) -> None:
        self.responder = responder
        self.chat_template = chat_template
        self.model_path = model_path
        self.delay = delay
        self.supports_images = supports_images
        self.tokenizer = FakeTokenizer(chat_template)
        self.cache = PrefixTrie()
        self.requests: List[Dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    # ---- SGLang Engine API ----------------------------------------------------------------
    def generate(
        self,
        prompt: Any = None,
        sampling_params: Any = None,
        input_ids: Any = None,
        image_data: Any = None,
        return_logprob: Any = False,
        logprob_start_len: Any = None,
        top_logprobs_num: Any = None,
        return_text_in_logprobs: bool = False,
        lora_path: Any = None,
        custom_logit_processor: Any = None,
        stream: bool = False,
    ) -> Any:
        call = {k: v for k, v in locals().items() if k != "self" and v is not None}
        with self._lock:
            self.requests.append(call)
        prompts = self._prompt_ids(prompt, input_ids)
        if image_data is not None and not self.supports_images:
            raise ValueError("This model does not support image input (text-only model).")
        batch = isinstance(prompts[0], list)
        items = prompts if batch else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or {}] * len(items)
        opts = {"return_logprob": return_logprob, "logprob_start_len": logprob_start_len,
                "top_logprobs_num": top_logprobs_num or 0, "with_text": bool(return_text_in_logprobs)}
        if stream:
            if batch:
                raise ValueError("FakeEngine streams single requests only")
            return self._stream(items[0], dict(params[0]), opts)
        results = [self._finish(self._run(ids, dict(p), opts)) for ids, p in zip(items, params)]
        return results if batch else results[0]

    def get_model_info(self) -> Dict[str, Any]:
        return {"model_path": self.model_path, "tokenizer_path": self.model_path,
                "is_generation": True, "chat_template": self.chat_template}

    def get_server_info(self) -> Dict[str, Any]:
        return {"model_path": self.model_path, "chat_template": None, "version": "fake"}

    def flush_cache(self) -> None:
        self.cache.clear()

    def shutdown(self) -> None:
        pass

    # ---- one request ----------------------------------------------------------------------
    def _prompt_ids(self, prompt: Any, input_ids: Any) -> Any:
        if (prompt is None) == (input_ids is None):
            raise ValueError("Either text or input_ids should be provided")
        if input_ids is not None:
            return input_ids
        if isinstance(prompt, list):
            return [self.tokenizer.encode(p) for p in prompt]
        return self.tokenizer.encode(prompt)

    def _run(self, ids: List[int], params: Dict[str, Any], opts: Dict[str, Any]) -> "_Request":
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            req = _Request(self, ids, params, opts)
            for _ in req.steps():
                pass
            return req
        finally:
            self._leave()

    def _stream(self, ids: List[int], params: Dict[str, Any], opts: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        # Like SGLang's Engine: each chunk's "text" is the new text only; meta_info is cumulative.
        self._enter()
        try:
            req = _Request(self, ids, params, opts)
            sent = 0
            for _ in req.steps():
                if self.delay:
                    time.sleep(self.delay / 4)
                if not req.finish_reason:
                    chunk, sent = _new_text(req.result(), sent)
                    yield chunk
            yield _new_text(self._finish(req), sent)[0]
        finally:
            self._leave()

    def _finish(self, req: "_Request") -> Dict[str, Any]:
        self.cache.insert(req.prompt_ids + req.output_ids)
        return req.result()

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def answer_ids(self, prompt: str, params: Dict[str, Any]) -> Tuple[List[int], int]:
        """Token ids of the answer followed by filler, and where the natural EOS falls."""
        rng = random.Random(zlib.crc32(prompt.encode()))
        text = self.responder(prompt, params) if self.responder else None
        if text is None and params.get("regex"):
            text = sample_regex(params["regex"], rng)
        if text is None and params.get("json_schema"):
            text = sample_json(params["json_schema"], rng)
        if text is None:
            text = _default_answer(rng)
        ids = self.tokenizer.encode(text)
        return ids, len(ids)


def _new_text(result: Dict[str, Any], sent: int) -> Tuple[Dict[str, Any], int]:
    text = result["text"]
    return {**result, "text": text[sent:]}, max(sent, len(text))


def _default_answer(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
    return " " + " ".join(words[:3]) + ".\n" + " ".join(words[3:]) + "."


def _filler(rng: random.Random) -> Iterator[str]:
    while True:
        yield " " + rng.choice(_WORDS)


class _Request:
    """Decoding state of one fake request, advanced token by token like a scheduler would."""

    def __init__(self, engine: FakeEngine, ids: List[int], params: Dict[str, Any], opts: Dict[str, Any]) -> None:
        self.engine, self.prompt_ids, self.params, self.opts = engine, list(ids), params, opts
        self.rid = uuid.uuid4().hex
        self.cached = min(engine.cache.match(self.prompt_ids), max(len(self.prompt_ids) - 1, 0))
        self.output_ids: List[int] = []
        self.text = ""
        self.finish_reason: Optional[Dict[str, Any]] = None

    def steps(self) -> Iterator[None]:
        max_new = self.params.get("max_new_tokens", 128)
        if max_new == 0:
            self.finish_reason = {"type": "length", "length": 0}
            yield
            return
        prompt = self.engine.tokenizer.decode(self.prompt_ids)
        answer, natural_end = self.engine.answer_ids(prompt, self.params)
        filler = _filler(random.Random(len(self.prompt_ids)))
        while self.finish_reason is None:
            step = len(self.output_ids)
            token = answer[step] if step < len(answer) else self.engine.tokenizer.encode(next(filler))[0]
            self._advance(token, step + 1 >= natural_end, max_new)
            yield

    def _advance(self, token: int, at_natural_end: bool, max_new: int) -> None:
        min_new = self.params.get("min_new_tokens") or 0
        allowed_to_stop = len(self.output_ids) >= min_new
        if token in set(self.params.get("stop_token_ids") or ()) and allowed_to_stop:
            self.finish_reason = {"type": "stop", "matched": token}
            return
        self.output_ids.append(token)
        self.text += self.engine.tokenizer.token_text(token)
        if self._hit_stop_string():
            return
        count = len(self.output_ids)
        if count >= max_new:
            self.finish_reason = {"type": "length", "length": max_new}
        elif at_natural_end and count >= min_new and not self.params.get("ignore_eos"):
            self.finish_reason = {"type": "stop", "matched": EOS_ID}

    def _hit_stop_string(self) -> bool:
        stops = self.params.get("stop") or []
        positions = [(self.text.find(s), s) for s in ([stops] if isinstance(stops, str) else stops) if s]
        found = [(pos, s) for pos, s in positions if pos >= 0]
        if not found:
            return False
        pos, stop = min(found)
        self.text = self.text[:pos]
        self.finish_reason = {"type": "stop", "matched": stop}
        return True

    # ---- result dict ------------------------------------------------------------------------
    def result(self) -> Dict[str, Any]:
        meta: Dict[str, Any] = {
            "id": self.rid,
            "finish_reason": self.finish_reason,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.output_ids),
            "cached_tokens": self.cached,
        }
        if self.opts["return_logprob"]:
            meta.update(self._logprobs())
        return {"text": self.text, "meta_info": meta}

    def _logprobs(self) -> Dict[str, Any]:
        ids = self.prompt_ids
        start = self.opts["logprob_start_len"]
        start = len(ids) - 1 if start is None or start < 0 else start
        # SGLang v0.4: entries for tokens start+1.. of the prompt; a None pad only when start == 0.
        inputs = [self._entry(lp_prev(ids, i), ids[i]) for i in range(start + 1, len(ids))]
        if start == 0 and ids:
            inputs.insert(0, self._entry(None, ids[0]))
        full = ids + self.output_ids
        outputs = [self._entry(lp_prev(full, len(ids) + i), t) for i, t in enumerate(self.output_ids)]
        meta = {"input_token_logprobs": inputs, "output_token_logprobs": outputs}
        if self.opts["top_logprobs_num"] > 0:
            meta["input_top_logprobs"] = [self._top(e) if e[0] is not None else None for e in inputs]
            meta["output_top_logprobs"] = [self._top(e) for e in outputs]
        return meta

    def _entry(self, logprob: Optional[float], token: int) -> List[Any]:
        text = self.engine.tokenizer.token_text(token) if self.opts["with_text"] else None
        return [logprob, token, text]

    def _top(self, entry: List[Any]) -> List[List[Any]]:
        extra = [[entry[0] - 1.0 - k, EOS_ID, "" if self.opts["with_text"] else None]
                 for k in range(self.opts["top_logprobs_num"] - 1)]
        return [entry] + extra


def lp_prev(ids: List[int], i: int) -> float:
    return fake_logprob(ids[i - 1] if i > 0 else -1, ids[i])

