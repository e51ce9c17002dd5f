"""Quick start: run a small multi-turn program on the embedded default model.

Usage:
    python examples/quick_start.py                     # starts sgl.Runtime() (SmolLM2-135M) in a subprocess
    python examples/quick_start.py --backend-url http://127.0.0.1:30000   # use a running server
    python examples/quick_start.py --engine            # the runtime in this process, no HTTP
"""

import sgl
from example_backend import backend_from_args, parser_with_backend_args


@sgl.function
def multi_turn_question(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=32))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=32))


def main() -> None:
    args = parser_with_backend_args(__doc__).parse_args()
    with backend_from_args(args):
        state = multi_turn_question.run(
            question_1="What is the capital of France?",
            question_2="List two famous places there.",
            temperature=0,
        )
        for message in state.messages():
            print(f"{message['role']}: {message['content']}")
        print("\nanswer_1 =", repr(state["answer_1"]))


if __name__ == "__main__":
    main()
