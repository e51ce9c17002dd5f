"""Backend selection shared by the examples.

Usage (from an example):
    from example_backend import backend_from_args, parser_with_backend_args
    args = parser_with_backend_args(__doc__).parse_args()
    with backend_from_args(args):
        ...  # sgl.set_default_backend has been called

Order of precedence:
    --backend-url URL (or env SGL_BACKEND_URL)  -> sgl.RuntimeEndpoint(URL) to a running server
    --engine                                    -> sgl.Engine(): the runtime in this process, no HTTP
    otherwise                                   -> sgl.Runtime() starts the default model in a subprocess
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Iterator

import sgl


def parser_with_backend_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend-url", default=os.environ.get("SGL_BACKEND_URL"),
                        help="URL of a running server (default: env SGL_BACKEND_URL, else start sgl.Runtime())")
    parser.add_argument("--api-key", default=os.environ.get("SGL_API_KEY"))
    parser.add_argument("--model-path", default=None, help="model for sgl.Runtime (default: the embedded model)")
    parser.add_argument("--engine", action="store_true", help="run the model in this process with sgl.Engine()")
    return parser


@contextlib.contextmanager
def backend_from_args(args: argparse.Namespace) -> Iterator[object]:
    """Set the default backend for the block; a Runtime or Engine started here is shut down after it."""
    runtime = None
    kwargs = {"model_path": args.model_path} if args.model_path else {}
    if args.backend_url:
        backend = sgl.RuntimeEndpoint(args.backend_url, api_key=args.api_key)
    elif args.engine:
        backend = runtime = sgl.Engine(**kwargs)
    else:
        backend = runtime = sgl.Runtime(**kwargs)
    sgl.set_default_backend(backend)
    try:
        yield backend
    finally:
        if runtime is not None:
            runtime.shutdown()
