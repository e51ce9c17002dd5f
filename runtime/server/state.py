"""What every route needs: the runtime, its tokenizer manager, and server-level settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from starlette.requests import Request

from sgl.runtime.server.chat_templates import ChatTemplate
from sgl.runtime.server_args import ServerArgs


@dataclass
class ServerState:
    server_args: ServerArgs
    core: Any  # RuntimeCore; its tokenizer manager exists once the runtime has started
    chat_template: Optional[ChatTemplate] = None
    metrics: Optional[Any] = None  # MetricsCollector with --enable-metrics

    @property
    def tm(self):
        return self.core.tokenizer_manager

    @property
    def tokenizer(self):
        return self.core.tokenizer

    @property
    def context_len(self) -> int:
        return self.core.model_config.context_len

    @property
    def vocab_size(self) -> int:
        return self.core.model_config.vocab_size

    @property
    def is_generation(self) -> bool:
        return self.core.model_config.is_generation

    def is_alive(self) -> bool:
        return self.tm is not None and self.tm.dead_reason is None


def get_state(request: Request) -> ServerState:
    return request.app.state.sgl
