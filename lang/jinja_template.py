"""Role rendering with the served model's own Jinja chat template.

The frontend builds text incrementally (role prefix, the role's text, role suffix), while a
Jinja template renders whole message lists. We bridge the two by differencing renders: the
prefix and suffix of a new `role` turn after `history` are the pieces around a probe content
in `render(history + [probe]) [len(render(history)):]`. The assistant prefix is taken from
the generation prompt instead (`add_generation_prompt=True`), because that is exactly what
`/v1/chat/completions` sends before the model writes. Thus a program's text equals
`apply_chat_template(messages, tokenize=False)` for templates whose renders extend each other,
including templates that insert a default system prompt (SmolLM2, Qwen2.5).

`bos_token` renders as "" because `/generate` tokenizes text with the tokenizer's own BOS
handling; keeping it would double the BOS on models whose tokenizer adds one.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from functools import lru_cache
from typing import Any, Dict, Optional, Tuple

from sgl.chat_template import ChatTemplate, Messages, message_text

logger = logging.getLogger(__name__)

PROBE = "SGLPROBECONTENT7F3A"


def looks_like_jinja(text: Any) -> bool:
    return isinstance(text, str) and ("{%" in text or "{{" in text)


@lru_cache(maxsize=32)
def _compile(source: str):
    # Same environment options as transformers' apply_chat_template, so renders agree.
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[_generation_extension(jinja2), "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _generation_extension(jinja2):
    """`{% generation %}...{% endgeneration %}` (HF's assistant-mask markers) render their body."""
    import jinja2.ext

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    return GenerationTag


class JinjaChatTemplate(ChatTemplate):
    """A ChatTemplate whose role prefixes/suffixes come from rendering a Jinja template.

    `fallback` (a built-in template) serves roles the Jinja template cannot render
    incrementally, e.g. templates that fold the system prompt into the first user turn.
    """

    def __init__(self, source: str, fallback: ChatTemplate, eos_token: str = "",
                 name: str = "jinja") -> None:
        _compile(source)  # fail early on a syntax error
        super().__init__(
            name=name,
            default_system_prompt=None,  # the template inserts its own default, if any
            role_prefix_and_suffix=dict(fallback.role_prefix_and_suffix),
            image_token=fallback.image_token,
            strip_role_content=False,
        )
        self.source = source
        self.eos_token = eos_token
        self.fallback = fallback
        self._warned = False
        self.stop_str = self._derive_stop_str()

    def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        plain = [{"role": m["role"], "content": message_text(m)} for m in messages]
        return _compile(self.source).render(
            messages=plain, add_generation_prompt=add_generation_prompt,
            bos_token="", eos_token=self.eos_token,
        )

    def get_prompt(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        return self.render(messages, add_generation_prompt)

    def get_prefix_and_suffix(self, role: str, history: Messages) -> Tuple[str, str]:
        try:
            pair = self._probe(role, history)
        except Exception as e:  # a template may reject an order of roles it does not expect
            pair = None
            logger.debug("chat template probe failed for role %s: %s", role, e)
        if pair is None:
            return self._fallback(role, history)
        return pair

    def _probe(self, role: str, history: Messages) -> Optional[Tuple[str, str]]:
        base = self.render(history)
        full = self.render(list(history) + [{"role": role, "content": PROBE}])
        if not full.startswith(base) or PROBE not in full[len(base):]:
            return None
        prefix, suffix = full[len(base):].split(PROBE, 1)
        if role == "assistant":
            prompt = self.render(history, add_generation_prompt=True)
            if prompt.startswith(base):
                prefix = prompt[len(base):]
        return prefix, suffix

    def _fallback(self, role: str, history: Messages) -> Tuple[str, str]:
        if not self._warned:
            self._warned = True
            logger.warning(
                "The model's chat template cannot be rendered turn by turn for role %r; "
                "using the built-in %r template for such turns.", role, self.fallback.name,
            )
        return self.fallback.get_prefix_and_suffix(role, history)

    def _derive_stop_str(self) -> Tuple[str, ...]:
        # The assistant turn's closing marker (e.g. <|im_end|>, <|eot_id|>) ends a generation.
        try:
            pair = self._probe("assistant", [{"role": "user", "content": "x"}])
        except Exception:
            pair = None
        suffix = (pair[1] if pair else "").strip()
        return (suffix,) if suffix else tuple(self.fallback.stop_str)


def chat_template_from_model_info(info: Dict[str, Any], fallback: ChatTemplate) -> ChatTemplate:
    """Pick the template a backend should use from a model-info dict.

    `info["chat_template"]` may be Jinja source (preferred), a .jinja file readable here, the
    name of a built-in template, or missing/None (then `fallback`, chosen from the model path).
    """
    from sgl.chat_template import get_chat_template, list_chat_templates

    source = _read_if_file(info.get("chat_template"))
    if looks_like_jinja(source):
        try:
            return JinjaChatTemplate(source, fallback, eos_token=info.get("eos_token") or "")
        except ImportError:
            logger.warning("jinja2 is not installed; using the built-in %r chat template.", fallback.name)
        except Exception as e:
            logger.warning("The server's chat template does not compile (%s); using %r.", e, fallback.name)
        return fallback
    if isinstance(source, str) and source in list_chat_templates():
        return get_chat_template(source)
    return fallback


def _read_if_file(source: Any) -> Any:
    if isinstance(source, str) and source.endswith(".jinja") and os.path.isfile(source):
        with open(source, encoding="utf-8") as f:
            return f.read()
    return source
