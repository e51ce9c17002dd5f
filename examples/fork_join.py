"""Skeleton of thought with fork/join: write a short outline, then expand every point in
parallel. fork() first caches the shared prefix once, so the branches reuse it.

Usage:
    python examples/fork_join.py [--backend-url URL | --engine] [--points 3]
"""

import sgl
from example_backend import backend_from_args, parser_with_backend_args


@sgl.function
def skeleton_of_thought(s, topic, points):
    s += "You are a helpful assistant.\n"
    s += "USER: Give some tips for " + topic + ".\n"
    s += f"ASSISTANT: Okay. Here are {points} concise tips, each under 8 words:\n"
    for i in range(1, points + 1):
        s += f"{i}." + sgl.gen(f"tip_{i}", max_tokens=16, stop=["\n", "."]) + ".\n"

    forks = s.fork(points)
    for i, f in enumerate(forks, start=1):
        f += f"Now, I expand tip {i} into a detailed paragraph:\nTip {i}:"
        f += sgl.gen("detail", 48, stop=["\n\n"])  # max_tokens is gen's second positional argument
    forks.join()  # each branch's new variable becomes a list on s: s["detail"][i]

    s += "Here are the tips with details:\n"
    for i, detail in enumerate(s["detail"], start=1):
        s += f"Tip {i}:" + detail + "\n"
    s += "\nIn summary," + sgl.gen("summary", max_tokens=32)


def main() -> None:
    parser = parser_with_backend_args(__doc__)
    parser.add_argument("--points", type=int, default=3)
    args = parser.parse_args()
    with backend_from_args(args):
        state = skeleton_of_thought.run(topic="writing a good blog post", points=args.points, temperature=0.3)
        for i, detail in enumerate(state["detail"], start=1):
            print(f"tip {i}:{state[f'tip_{i}']}\n  ->{detail.strip()}")
        print("summary:", state["summary"].strip())


if __name__ == "__main__":
    main()
