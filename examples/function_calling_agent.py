"""An agent loop with function calling: the model is offered tools, sgl constrains its calls so
their arguments always validate, Python runs them, and the results go back into the chat.

The first step must call a tool (tool_choice "required"); later steps may call more or answer
(tool_choice "auto": text is free, and a call is constrained from its first character on).

Usage:
    python examples/function_calling_agent.py [--backend-url URL | --engine] [--steps 3]
"""

import json

import sgl
from example_backend import backend_from_args, parser_with_backend_args

TOOLS = [
    {"type": "function", "function": {
        "name": "multiply", "description": "Multiply two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "population", "description": "The population of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}},
]
POPULATIONS = {"paris": 2_100_000, "tokyo": 14_000_000, "lagos": 15_400_000}


def run_tool(name: str, arguments: dict) -> str:
    """The tools themselves: ordinary Python."""
    if name == "multiply":
        return str(arguments["a"] * arguments["b"])
    return str(POPULATIONS.get(arguments["city"].strip().lower(), "unknown"))


@sgl.function
def agent(s, question, steps):
    s += sgl.system("You are a careful assistant.\n\n" + sgl.tools_prompt(TOOLS))
    s += sgl.user(question)
    for step in range(steps):
        name = f"step_{step}"
        choice = "required" if step == 0 else "auto"
        s += sgl.assistant(sgl.gen(name, tools=TOOLS, tool_choice=choice, max_tokens=96))
        calls = s.tool_calls(name)
        if not calls:
            s["answer"] = s[name]
            return
        results = [f"{c['name']}({c['arguments']}) = {run_tool(c['name'], json.loads(c['arguments']))}"
                   for c in calls]
        s += sgl.user("Tool results:\n" + "\n".join(results))
    s += sgl.assistant(sgl.gen("answer", max_tokens=48))


def main() -> None:
    parser = parser_with_backend_args(__doc__)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with backend_from_args(args):
        state = agent.run(question="What is the population of Paris?", steps=args.steps, temperature=0)
        for step in range(args.steps):
            name = f"step_{step}"
            if name not in state:
                break
            print(f"{name}: calls={state.tool_calls(name)}")
        print("answer:", state["answer"])


if __name__ == "__main__":
    main()
