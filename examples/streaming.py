"""Streaming: run(stream=True) returns at once; text_iter() yields text as it is generated,
text_iter("var") one variable, and text_async_iter() is the asyncio form.

Usage:
    python examples/streaming.py [--backend-url URL | --engine]
"""

import asyncio

import sgl
from example_backend import backend_from_args, parser_with_backend_args


@sgl.function
def story(s, topic):
    s += sgl.user("Write two sentences about " + topic + ".")
    s += sgl.assistant(sgl.gen("story", max_tokens=48))


async def stream_async() -> None:
    state = story.run(topic="the sea", stream=True, temperature=0)
    async for chunk in state.text_async_iter("story"):
        print(chunk, end="", flush=True)
    print()


def main() -> None:
    args = parser_with_backend_args(__doc__).parse_args()
    with backend_from_args(args):
        state = story.run(topic="a lighthouse", stream=True, temperature=0)
        for chunk in state.text_iter("story"):
            print(chunk, end="", flush=True)
        print()
        asyncio.run(stream_async())


if __name__ == "__main__":
    main()
