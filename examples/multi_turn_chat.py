"""Multi-turn chat with roles: expression roles, `with s.user():` blocks, and messages().
The roles render with the served model's own chat template, so the text equals what
/v1/chat/completions would build for the same messages.

Usage:
    python examples/multi_turn_chat.py [--backend-url URL | --engine] [--turns 2]
"""

import sgl
from example_backend import backend_from_args, parser_with_backend_args

QUESTIONS = ["Name a planet.", "How far is it from the Sun?", "Give it a nickname."]


@sgl.function
def chat(s, questions):
    s += sgl.system("You are a concise assistant.")
    for i, question in enumerate(questions):
        with s.user():
            s += question
        with s.assistant():
            s += sgl.gen(f"answer_{i}", max_tokens=32)


def main() -> None:
    parser = parser_with_backend_args(__doc__)
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args()
    with backend_from_args(args):
        state = chat.run(questions=QUESTIONS[: args.turns], temperature=0)
        for message in state.messages():
            print(f"[{message['role']}] {message['content'].strip()}")
        print("\n--- prompt text as the model saw it ---\n" + state.text())


if __name__ == "__main__":
    main()
