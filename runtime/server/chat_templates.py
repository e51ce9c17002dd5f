"""Chat prompts for `/v1/chat/completions`.

The template is the tokenizer's own Jinja `chat_template` unless `--chat-template` names a built-in
one (below), a `.jinja` file, or is Jinja source itself. Built-in templates may carry stop strings
(the end-of-turn marker), which are added to every chat request's `stop`.

A trailing assistant message is a prefix to continue: the prompt ends with its text, with no
end-of-turn marker and no new generation prompt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# Each template writes the turns itself; `add_generation_prompt` opens the assistant's turn.
_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Llama-2 chat: the system prompt sits inside the first [INST] block.
_LLAMA2 = (
    "{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.sys = '<<SYS>>\n' + m['content'] + '\n<</SYS>>\n\n' %}"
    "{% elif m['role'] == 'user' %}{{ '<s>[INST] ' + ns.sys + m['content'] | trim + ' [/INST]' }}{% set ns.sys = '' %}"
    "{% else %}{{ ' ' + m['content'] | trim + ' </s>' }}{% endif %}{% endfor %}"
)
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_VICUNA = (
    "{% set ns = namespace(sys='" + _VICUNA_SYSTEM.replace("'", "\\'") + "') %}"
    "{% for m in messages if m['role'] == 'system' %}{% set ns.sys = m['content'] %}{% endfor %}{{ ns.sys }}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'user' %}{{ ' USER: ' + m['content'] }}{% else %}{{ ' ASSISTANT: ' + m['content'] + '</s>' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)
# Gemma has no system role: the system text opens the first user turn.
_GEMMA = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.sys = m['content'] + '\n\n' %}"
    "{% else %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + ns.sys + m['content'] | trim + '<end_of_turn>\n' }}{% set ns.sys = '' %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BuiltinTemplate:
    source: str
    stop: tuple = ()


BUILTIN_TEMPLATES: Dict[str, BuiltinTemplate] = {
    "chatml": BuiltinTemplate(_CHATML, ("<|im_end|>",)),
    "llama-3-instruct": BuiltinTemplate(_LLAMA3, ("<|eot_id|>",)),
    "llama-2-chat": BuiltinTemplate(_LLAMA2, ("</s>",)),
    "vicuna_v1.1": BuiltinTemplate(_VICUNA, ("</s>",)),
    "gemma-it": BuiltinTemplate(_GEMMA, ("<end_of_turn>",)),
}
_ALIASES = {"llama-2": "llama-2-chat", "llama2": "llama-2-chat", "llama-3": "llama-3-instruct",
            "vicuna": "vicuna_v1.1", "qwen": "chatml", "gemma": "gemma-it"}

# Marks where a continued assistant message's text goes in the rendered prompt.
_SENTINEL = "\u2063<<sgl-continue>>\u2063"


@dataclass
class ChatTemplate:
    source: str
    stop: List[str] = field(default_factory=list)
    name: Optional[str] = None


def resolve_chat_template(flag: Optional[str], tokenizer: Any) -> Optional[ChatTemplate]:
    """The template the server uses: --chat-template if given, else the tokenizer's (or None)."""
    if flag:
        return _from_flag(flag)
    source = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(source, dict):  # some tokenizers keep several named templates
        source = source.get("default") or next(iter(source.values()), None)
    return ChatTemplate(source) if isinstance(source, str) and source else None


def _from_flag(flag: str) -> ChatTemplate:
    name = _ALIASES.get(flag, flag)
    if name in BUILTIN_TEMPLATES:
        builtin = BUILTIN_TEMPLATES[name]
        return ChatTemplate(builtin.source, list(builtin.stop), name)
    if flag.endswith(".jinja"):
        if not os.path.isfile(flag):
            raise ValueError(f"--chat-template: file {flag!r} does not exist")
        with open(flag, encoding="utf-8") as f:
            return ChatTemplate(f.read(), [], os.path.basename(flag))
    if "{{" in flag or "{%" in flag:
        return ChatTemplate(flag, [], "inline")
    raise ValueError(f"--chat-template must be a built-in name {sorted(BUILTIN_TEMPLATES)}, "
                     f"a .jinja file, or Jinja source; got {flag!r}")


def render_chat(template: ChatTemplate, tokenizer: Any, messages: List[Dict[str, Any]],
                tools: Optional[list] = None) -> str:
    """The prompt text for `messages` (dicts with role and string content)."""
    if messages and messages[-1]["role"] == "assistant":
        return _render_continuation(template, tokenizer, messages, tools)
    return _render(template, tokenizer, messages, True, tools)


def _render_continuation(template: ChatTemplate, tokenizer: Any, messages: List[Dict[str, Any]],
                         tools: Optional[list]) -> str:
    # Render the turn with a marker as its text and cut there: whatever the template writes after
    # an assistant message (end-of-turn, newline) is dropped, whatever it writes before is kept.
    content = messages[-1]["content"] or ""
    marked = messages[:-1] + [{**messages[-1], "content": _SENTINEL}]
    text = _render(template, tokenizer, marked, False, tools)
    cut = text.find(_SENTINEL)
    if cut < 0:  # the template dropped the message: continue after a fresh generation prompt
        return _render(template, tokenizer, messages[:-1], True, tools) + content
    return text[:cut] + content


def _render(template: ChatTemplate, tokenizer: Any, messages: list, add_generation_prompt: bool,
            tools: Optional[list]) -> str:
    from jinja2 import TemplateError

    kwargs: Dict[str, Any] = {"chat_template": template.source, "tokenize": False,
                              "add_generation_prompt": add_generation_prompt}
    if tools:
        kwargs["tools"] = tools
    try:
        text = tokenizer.apply_chat_template(messages, **kwargs)
    except TemplateError as e:  # e.g. raise_exception("roles must alternate") inside the template
        raise ValueError(f"messages: the chat template rejected them: {e}") from None
    if not isinstance(text, str):
        raise ValueError("messages: the chat template did not produce text")
    return text
