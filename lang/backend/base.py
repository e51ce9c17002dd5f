"""`BaseBackend`: what the interpreter asks of a model backend.

`s` arguments are the program's `StreamExecutor`: backends read `s.text_`, `s.messages_`
and `s.images_` from it.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from sgl.chat_template import ChatTemplate, get_chat_template
from sgl.choices import ChoicesDecision, ChoicesSamplingMethod
from sgl.sampling import SglSamplingParams


class BaseBackend:
    # Whether join(mode="concate_and_append") may ask the backend to concatenate KV caches.
    support_concate_and_append: bool = False
    # Whether roles must end in a chat API call (OpenAI chat models) rather than plain text.
    is_chat_model: bool = False

    def __init__(self) -> None:
        self.chat_template: ChatTemplate = get_chat_template("default")

    def get_model_name(self) -> str:
        return type(self).__name__

    def get_chat_template(self) -> ChatTemplate:
        return self.chat_template

    # ---- program lifecycle hooks (no-ops unless a backend needs them) -------------------------
    def begin_program(self, s: Any) -> None:
        pass

    def end_program(self, s: Any) -> None:
        pass

    def end_request(self, rid: Any) -> None:
        pass

    def cache_prefix(self, prefix_str: str) -> None:
        pass

    def uncache_prefix(self, rid: str) -> None:
        pass

    def commit_lazy_operations(self, s: Any) -> None:
        pass

    def fork_program(self, src: Any, dst: List[Any], position_ids_offset: Optional[List[int]] = None) -> None:
        pass

    def fill_image(self, s: Any) -> None:
        pass

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, s: Any, sampling_params: SglSamplingParams) -> Tuple[str, Dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement generate")

    def generate_stream(self, s: Any, sampling_params: SglSamplingParams) -> Iterator[Tuple[str, Dict[str, Any]]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement generate_stream")

    def select(self, s: Any, choices: List[str], temperature: float,
               choices_method: ChoicesSamplingMethod) -> ChoicesDecision:
        raise NotImplementedError(f"{type(self).__name__} does not implement select")

    def concatenate_and_append(self, src_rids: List[str], dst_rid: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot concatenate KV caches")

    # ---- admin -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        pass

    def flush_cache(self) -> Any:
        pass

    def get_server_info(self) -> Any:
        pass
