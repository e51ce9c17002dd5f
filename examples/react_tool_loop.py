"""A ReAct-style loop: the model thinks, picks an action with select(), and ordinary Python
runs the tool between two gens. The loop ends on "Finish" or after a few steps.

Usage:
    python examples/react_tool_loop.py [--backend-url URL | --engine] [--steps 3]
"""

import re

import sgl
from example_backend import backend_from_args, parser_with_backend_args

FACTS = {"linux": "Linux was created by Linus Torvalds, who lives in the United States.",
         "microsoft": "Microsoft was founded by Bill Gates and Paul Allen."}


def search(query: str) -> str:
    """The tool: a tiny offline knowledge base."""
    words = re.findall(r"\w+", query.lower())
    hits = [fact for key, fact in FACTS.items() if key in words]
    return hits[0] if hits else "No results."


@sgl.function
def react(s, question, steps):
    s += "Answer questions by searching. Actions: Search [query] or Finish [answer].\n\n"
    s += "Question: Who founded Microsoft?\nThought 1: I should search for Microsoft.\n"
    s += "Action 1: Search [Microsoft]\nObservation 1: " + FACTS["microsoft"] + "\n"
    s += "Thought 2: I know the answer.\nAction 2: Finish [Bill Gates and Paul Allen]\n\n"
    s += "Question: " + question + "\n"
    for i in range(1, steps + 1):
        s += f"Thought {i}:" + sgl.gen(f"thought_{i}", stop="\n", max_tokens=24) + "\n"
        s += f"Action {i}: " + sgl.select(f"action_{i}", ["Search", "Finish"])
        s += " [" + sgl.gen(f"arg_{i}", stop="]", max_tokens=16) + "]\n"
        if s[f"action_{i}"] == "Finish":
            s["answer"] = s[f"arg_{i}"]
            return
        s += f"Observation {i}: " + search(s[f"arg_{i}"]) + "\n"  # Python runs between gens
    s += "Final answer: " + sgl.gen("answer", stop="\n", max_tokens=24)


def main() -> None:
    parser = parser_with_backend_args(__doc__)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with backend_from_args(args):
        state = react.run(question="Where does the creator of Linux live?", steps=args.steps, temperature=0)
        print(state.text())
        print("answer:", state["answer"])


if __name__ == "__main__":
    main()
