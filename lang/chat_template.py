"""Built-in frontend chat templates, for backends that cannot report the served model's own.

A template maps each role to a (prefix, suffix) pair wrapped around the role's text. When the
backend reports the model's Jinja template, `sgl.jinja_template.JinjaChatTemplate` is used
instead, so that roles render exactly as the server's `/v1/chat/completions` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Messages = List[Dict[str, object]]


class ChatTemplateStyle(Enum):
    PLAIN = auto()
    LLAMA2 = auto()  # the first system prompt is folded into the first [INST]


@dataclass
class ChatTemplate:
    name: str
    default_system_prompt: Optional[str]
    role_prefix_and_suffix: Dict[str, Tuple[str, str]]
    stop_str: Sequence[str] = ()
    image_token: str = "<image>"
    style: ChatTemplateStyle = ChatTemplateStyle.PLAIN
    audio_token: str = "<audio>"
    # messages() records a turn's text left-stripped (SGLang's behaviour). Templates rendered by
    # the model's own Jinja keep it exact, so messages() re-renders to the program's text.
    strip_role_content: bool = True
    extra: Dict[str, object] = field(default_factory=dict)

    def get_prefix_and_suffix(self, role: str, history: Messages) -> Tuple[str, str]:
        """(prefix, suffix) of a `role` turn that follows the messages in `history`."""
        if role not in self.role_prefix_and_suffix:
            raise ValueError(f"role must be one of {sorted(self.role_prefix_and_suffix)}, got {role!r}")
        prefix, suffix = self.role_prefix_and_suffix[role]
        if self.style == ChatTemplateStyle.LLAMA2:
            prefix = self._llama2_prefix(role, history, prefix)
        return prefix, suffix

    def _llama2_prefix(self, role: str, history: Messages, prefix: str) -> str:
        if role == "system" and not history:
            return self.role_prefix_and_suffix["user"][0] + prefix
        if role == "user" and len(history) == 1 and history[0]["role"] == "system":
            return ""  # the [INST] was already opened by the system turn
        return prefix

    def get_prompt(self, messages: Messages) -> str:
        """Render a whole message list (text content only)."""
        prompt = ""
        for i, message in enumerate(messages):
            role = str(message["role"])
            prefix, suffix = self.get_prefix_and_suffix(role, messages[:i])
            prompt += prefix + message_text(message) + suffix
        return prompt


def message_text(message: Dict[str, object]) -> str:
    """The text of a message; image parts of a content list are dropped (as the server does)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


# ---- registry ------------------------------------------------------------------------------

_TEMPLATES: Dict[str, ChatTemplate] = {}
_MATCHERS: List[Callable[[str], Optional[str]]] = []


def register_chat_template(template: ChatTemplate) -> None:
    _TEMPLATES[template.name] = template


def register_chat_template_matching_function(func: Callable[[str], Optional[str]]) -> Callable:
    _MATCHERS.append(func)
    return func


def get_chat_template(name: str) -> ChatTemplate:
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise ValueError(f"chat template must be one of {sorted(_TEMPLATES)}, got {name!r}") from None


def get_chat_template_by_model_path(model_path: str) -> ChatTemplate:
    """First matching built-in template for a model path, else "default"."""
    for matcher in _MATCHERS:
        name = matcher(model_path or "")
        if name is not None:
            return get_chat_template(name)
    return get_chat_template("default")


def list_chat_templates() -> List[str]:
    return sorted(_TEMPLATES)


# ---- built-in templates ---------------------------------------------------------------------

def _roles(system: Tuple[str, str], user: Tuple[str, str], assistant: Tuple[str, str]) -> Dict:
    return {"system": system, "user": user, "assistant": assistant}


def _chatml_roles() -> Dict[str, Tuple[str, str]]:
    return _roles(
        ("<|im_start|>system\n", "<|im_end|>\n"),
        ("<|im_start|>user\n", "<|im_end|>\n"),
        ("<|im_start|>assistant\n", "<|im_end|>\n"),
    )


def _llama3_role(role: str) -> Tuple[str, str]:
    return (f"<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")


_BUILTINS = [
    ChatTemplate("default", None, _roles(("SYSTEM:", "\n"), ("USER:", "\n"), ("ASSISTANT:", "\n"))),
    ChatTemplate("claude", None, _roles(("", ""), ("\n\nHuman: ", ""), ("\n\nAssistant:", ""))),
    ChatTemplate("chatml", None, _chatml_roles(), stop_str=("<|im_end|>",)),
    ChatTemplate("qwen", "You are a helpful assistant.", _chatml_roles(), stop_str=("<|im_end|>",)),
    ChatTemplate(
        "smollm2-instruct",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        _chatml_roles(),
        stop_str=("<|im_end|>",),
    ),
    ChatTemplate(
        "llama-2-chat",
        None,
        _roles(("<<SYS>>\n", "\n<</SYS>>\n\n"), ("[INST] ", " [/INST]"), ("", " </s><s>")),
        style=ChatTemplateStyle.LLAMA2,
    ),
    ChatTemplate(
        "llama-3-instruct",
        None,
        {role: _llama3_role(role) for role in ("system", "user", "assistant")},
        stop_str=("<|eot_id|>",),
    ),
    ChatTemplate(
        "mistral",
        None,
        _roles(("[SYSTEM_PROMPT] ", " [/SYSTEM_PROMPT]"), ("[INST] ", " [/INST]"), ("", " </s><s>")),
        stop_str=("</s>",),
    ),
    ChatTemplate(
        "vicuna_v1.1",
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        _roles(("", " "), ("USER:", " "), ("ASSISTANT:", "</s>")),
        image_token=" <image>\n",
    ),
    ChatTemplate(
        "gemma-it",
        None,
        _roles(("", ""), ("<start_of_turn>user\n", "<end_of_turn>\n"), ("<start_of_turn>model\n", "<end_of_turn>\n")),
    ),
]
for _template in _BUILTINS:
    register_chat_template(_template)


@register_chat_template_matching_function
def _match_llama3(path: str) -> Optional[str]:
    path = path.lower()
    return "llama-3-instruct" if "llama-3" in path and "instruct" in path else None


@register_chat_template_matching_function
def _match_qwen(path: str) -> Optional[str]:
    path = path.lower()
    if "qwen" in path and ("chat" in path or "instruct" in path) and "vl" not in path:
        return "qwen"
    return None


@register_chat_template_matching_function
def _match_mistral(path: str) -> Optional[str]:
    path = path.lower()
    return "mistral" if ("mistral" in path or "mixtral" in path) and "instruct" in path else None


@register_chat_template_matching_function
def _match_llama2(path: str) -> Optional[str]:
    path = path.lower()
    return "llama-2-chat" if "llama-2" in path and "chat" in path else None


@register_chat_template_matching_function
def _match_vicuna(path: str) -> Optional[str]:
    path = path.lower()
    return "vicuna_v1.1" if "vicuna" in path or "llava-v1.5" in path else None


@register_chat_template_matching_function
def _match_chatml(path: str) -> Optional[str]:
    path = path.lower()
    return "chatml" if "tinyllama" in path or "chatml" in path else None


@register_chat_template_matching_function
def _match_smollm2(path: str) -> Optional[str]:
    path = path.lower()
    return "smollm2-instruct" if "smollm2" in path and "instruct" in path else None


@register_chat_template_matching_function
def _match_gemma(path: str) -> Optional[str]:
    path = path.lower()
    return "gemma-it" if "gemma" in path and "-it" in path else None
