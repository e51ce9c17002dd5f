"""`python -m sgl.router`: parse the flags, serve the router until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
from typing import List, Optional

from sgl.runtime.router.router_args import RouterArgs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sgl.router",
        description="Cache-aware load balancer in front of several sgl servers (SGLang's router flags).")
    RouterArgs.add_cli_args(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = RouterArgs.from_cli_args(parser.parse_args(argv))
    except ValueError as exc:
        parser.error(str(exc))
    serve(args)
    return 0


def serve(args: RouterArgs) -> None:
    import uvicorn

    from sgl.runtime.router.app import Router, create_app

    logging.basicConfig(level=args.log_level.upper(), format="[router %(asctime)s] %(message)s")
    logging.getLogger(__name__).info("Router on http://%s:%d, policy %s, workers %s", args.host, args.port,
                                     args.policy, args.worker_urls)
    uvicorn.run(create_app(Router(args)), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
