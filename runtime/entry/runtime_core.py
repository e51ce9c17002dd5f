"""RuntimeCore: what the Engine and the HTTP server share: model config, tokenizer, the child
processes and the TokenizerManager."""

from __future__ import annotations

import logging
from typing import Optional

from sgl.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)


class RuntimeCore:
    def __init__(self, server_args: ServerArgs):
        from sgl.runtime.distributed.partition import check_tensor_parallel
        from sgl.runtime.models.model_config import ModelConfig
        from sgl.runtime.entry.process_utils import configure_logging

        configure_logging(server_args.log_level)
        self.server_args = server_args
        if server_args.node_rank > 0:
            raise ValueError(f"--node-rank {server_args.node_rank}: only node 0 serves requests; start the other "
                             "nodes with `python -m sgl.launch_server ... --node-rank N`, which runs their ranks only")
        # Validate the model in this process first: a bad path fails at once, before any spawn.
        self.model_config = ModelConfig.from_server_args(server_args)
        check_tensor_parallel(self.model_config.hf_config, server_args.tp_size)
        self.tokenizer = None
        if not server_args.skip_tokenizer_init:
            from sgl.runtime.models.tokenizer import get_tokenizer

            self.tokenizer = get_tokenizer(server_args.tokenizer_path, server_args.tokenizer_mode, server_args.trust_remote_code)
        self.procs = []
        self.tokenizer_manager = None
        self.scheduler_info: Optional[dict] = None

    async def start_async(self) -> None:
        """Launch the processes, then create the TokenizerManager on the running loop."""
        import asyncio

        from sgl.runtime.entry.launcher import launch_subprocesses
        from sgl.runtime.tokenizer.tokenizer_manager import TokenizerManager

        loop = asyncio.get_running_loop()
        self.procs, port_args, self.scheduler_info = await loop.run_in_executor(None, launch_subprocesses, self.server_args)
        self.tokenizer_manager = TokenizerManager(
            self.server_args, port_args, self.model_config, self.tokenizer, self.scheduler_info, self.procs
        )
        self.tokenizer_manager.start()

    async def close_async(self) -> None:
        if self.tokenizer_manager is not None:
            self.tokenizer_manager.close()

    def shutdown(self) -> None:
        from sgl.runtime.entry.launcher import shutdown_processes

        shutdown_processes(self.procs)
