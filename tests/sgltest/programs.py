"""The conformance suite: SGLang-style programs with structural checks.

Each function takes no backend: it runs on the default backend (`sgl.set_default_backend`).
tests/lang/test_lang_conformance.py runs every program on the default model (SmolLM2-135M) through
an in-process `sgl.Engine` and through a launched server (tests/lang/conftest.py). Programs are
written the way SGLang users write them; checks are about types, counts, roles, order and regex
matches, never about what the model knows, so they hold for any sampled text. Where a program's
shape itself depends on the sample (a free-text field that a small model may not close before
max_tokens), it decodes greedily (temperature 0). Generations are kept short so the suite stays
fast on a CPU.
"""

from __future__ import annotations

import asyncio
import json
import re

import sgl

SHORT = 16  # max_new_tokens for free-text gens


def few_shot_qa() -> None:
    @sgl.function
    def few_shot_qa(s, question):
        s += "The following are questions with answers.\n\n"
        s += "Q: What is the capital of France?\n"
        s += "A: Paris\n"
        s += "Q: What is the capital of Germany?\n"
        s += "A: Berlin\n"
        s += "Q: What is the capital of Italy?\n"
        s += "A: Rome\n"
        s += "Q: " + question + "\n"
        s += "A:" + sgl.gen("answer", stop="\n", temperature=0)

    state = few_shot_qa.run(question="What is the capital of the United States?", max_new_tokens=SHORT)
    assert isinstance(state["answer"], str) and "\n" not in state["answer"], state.text()
    assert state.text().endswith("A:" + state["answer"])
    questions = ["What is the capital of Japan?", "What is the capital of the United Kingdom?",
                 "What is the capital city of China?"]
    states = few_shot_qa.run_batch([{"question": q} for q in questions], temperature=0.1, max_new_tokens=SHORT)
    assert len(states) == 3
    for state, question in zip(states, questions):
        assert "Q: " + question + "\nA:" in state.text()
        assert "\n" not in state["answer"]


def mt_bench() -> None:
    @sgl.function
    def answer_mt_bench(s, question_1, question_2):
        s += sgl.system("You are a helpful assistant.")
        s += sgl.user(question_1)
        s += sgl.assistant(sgl.gen("answer_1"))
        with s.user():
            s += question_2
        with s.assistant():
            s += sgl.gen("answer_2")

    q1 = "Compose an engaging travel blog post about a recent trip to Hawaii."
    q2 = "Rewrite your previous response. Start every sentence with the letter A."
    state = answer_mt_bench.run(question_1=q1, question_2=q2, temperature=0.7, max_new_tokens=SHORT)
    messages = state.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "You are a helpful assistant."
    assert [messages[1]["content"], messages[3]["content"]] == [q1, q2]
    # Exact with the model's own template; left-stripped with built-in templates (as SGLang).
    assert messages[2]["content"] in (state["answer_1"], state["answer_1"].lstrip())
    assert messages[4]["content"] in (state["answer_2"], state["answer_2"].lstrip())
    text = state.text()
    between = text[text.index(q1) + len(q1):text.index(q2)]  # an answer may be empty: no index("")
    assert state["answer_1"] in between


def select() -> None:
    @sgl.function
    def true_or_false(s, statement):
        s += "Determine whether the statement below is True, False, or Unknown.\n"
        s += "Statement: The capital of France is Pairs.\n"
        s += "Answer: True\n"
        s += "Statement: " + statement + "\n"
        s += "Answer:" + sgl.select("answer", ["True", "False", "Unknown"])

    for statement in ["The capital of Germany is Berlin.", "Purple is a better color than green."]:
        state = true_or_false.run(statement=statement)
        assert state["answer"] in ["True", "False", "Unknown"], state.text()
        assert state.text().endswith("Answer:" + state["answer"])
        meta = state.get_meta_info("answer")
        assert len(meta["normalized_prompt_logprobs"]) == 3
        assert len(meta["input_token_logprobs"]) == 3


def select_methods() -> None:
    @sgl.function
    def pick(s, method):
        s += "The animal that barks is the"
        s += sgl.gen("animal", choices=[" dog", " cat", " hippopotamus"], choices_method=method)

    for method in [sgl.token_length_normalized, sgl.greedy_token_selection,
                   sgl.unconditional_likelihood_normalized]:
        state = pick.run(method=method)
        assert state["animal"] in [" dog", " cat", " hippopotamus"]
        meta = state.get_meta_info("animal")
        assert all(len(lps) >= 1 for lps in meta["input_token_logprobs"])  # one list per choice
        if method is sgl.greedy_token_selection:
            assert len(meta["greedy_logprob_matrix"]) == 3
        if method is sgl.unconditional_likelihood_normalized:
            assert len(meta["normalized_unconditional_prompt_logprobs"]) == 3


def decode_int() -> None:
    @sgl.function
    def decode_int(s):
        s += "The number of hours in a day is " + sgl.gen_int("hours") + "\n"
        s += "The number of days in a year is " + sgl.gen_int("days") + "\n"

    state = decode_int.run(temperature=0.1, max_new_tokens=8)
    assert isinstance(int(state["hours"]), int) and isinstance(int(state["days"]), int), state.text()


def decode_json_regex() -> None:
    @sgl.function
    def decode_json(s):
        from sgl.ir import REGEX_FLOAT, REGEX_INT, REGEX_STR

        s += "Generate a JSON object to describe the basic city information of Paris.\n"
        s += "Here are the JSON object:\n"
        with s.var_scope("json_output"):
            s += "{\n"
            s += '  "name": ' + sgl.gen(regex=REGEX_STR, max_tokens=32) + ",\n"
            s += '  "population": ' + sgl.gen(regex=REGEX_INT, stop=[" ", "\n"], max_tokens=8) + ",\n"
            s += '  "area": ' + sgl.gen(regex=REGEX_INT, stop=[" ", "\n"], max_tokens=8) + ",\n"
            s += '  "latitude": ' + sgl.gen(regex=REGEX_FLOAT, stop=[" ", "\n"], max_tokens=8) + "\n"
            s += "}"

    state = decode_json.run(temperature=0.0)
    obj = json.loads(state["json_output"])
    assert isinstance(obj["name"], str)
    assert isinstance(obj["population"], int) and isinstance(obj["area"], int)
    assert isinstance(obj["latitude"], (int, float))


def decode_json() -> None:
    @sgl.function
    def decode_json(s):
        s += "Generate a JSON object to describe the basic city information of Paris.\n"
        with s.var_scope("json_output"):
            s += "{\n"
            s += '  "name": ' + sgl.gen_string(max_tokens=32) + ",\n"
            s += '  "population": ' + sgl.gen_int(max_tokens=8) + ",\n"
            s += '  "area": ' + sgl.gen(dtype=int, max_tokens=8) + ",\n"
            s += '  "country": ' + sgl.gen_string(max_tokens=32) + ",\n"
            s += '  "timezone": ' + sgl.gen(dtype=str, max_tokens=32) + "\n"
            s += "}"

    # Greedy: sampled at temperature 1.0, a 135M model may run a string past max_tokens unclosed.
    state = decode_json.run(temperature=0, max_new_tokens=16)
    obj = json.loads(state["json_output"])
    assert isinstance(obj["name"], str) and isinstance(obj["country"], str)
    assert isinstance(obj["population"], int) and isinstance(obj["area"], int)


def json_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "[A-Za-z]{1,8}"},
                                               "age": {"type": "integer"}}, "required": ["name", "age"]}

    @sgl.function
    def person(s):
        s += "Describe a person as JSON: " + sgl.gen("person", json_schema=json.dumps(schema), max_tokens=64)

    obj = json.loads(person.run(temperature=0)["person"])
    assert isinstance(obj["name"], str) and isinstance(obj["age"], int)


def expert_answer() -> None:
    @sgl.function
    def expert_answer(s, question):
        s += "Question: " + question + "\n"
        s += "A good person to answer this question is" + sgl.gen("expert", stop=[".", "\n"]) + ".\n"
        s += "For example," + s["expert"] + " would answer that " + sgl.gen("answer", stop=".") + "."

    state = expert_answer.run(question="What is the capital of France?", temperature=0.1, max_new_tokens=SHORT)
    assert "For example," + state["expert"] + " would answer that " in state.text()
    assert "." not in state["answer"]


def tool_use() -> None:
    def calculate(expression: str) -> str:
        # A tool: plain Python between two gens. Only arithmetic is evaluated.
        if not re.fullmatch(r"[0-9+\-*/(). ]+", expression):
            return "error"
        try:
            return str(eval(expression, {"__builtins__": {}}))
        except Exception:
            return "error"

    @sgl.function
    def tool_use(s, lhs, rhs):
        s += "Please perform computations using a calculator. You can use calculate(expression) to get the results.\n"
        s += "For example,\ncalculate(1+2)=3\ncalculate(3*4)=12\n"
        s += "Question: What is the product of " + str(lhs) + " and " + str(rhs) + "?\n"
        s += "Answer: The answer is calculate(" + sgl.gen("expression", stop=")", max_tokens=16) + ") = "
        with s.var_scope("answer"):
            s += calculate(s["expression"])

    state = tool_use(lhs=257, rhs=983, temperature=0)
    assert state["answer"] == calculate(state["expression"])
    assert state.text().endswith(") = " + state["answer"])


def react() -> None:
    @sgl.function
    def react(s, question):
        s += "Question: Which country does the founder of Microsoft live in?\n"
        s += "Thought 1: I need to search for the founder of Microsoft.\n"
        s += "Action 1: Search [Founder of Microsoft].\n"
        s += "Observation 1: The founder of Microsoft is Bill Gates.\n"
        s += "Thought 2: The answer is the United States.\n"
        s += "Action 2: Finish [United States].\n\n"
        s += "Question: " + question + "\n"
        for i in range(1, 4):
            s += f"Thought {i}:" + sgl.gen(stop=[".", "\n"], max_tokens=16) + ".\n"
            s += f"Action {i}: " + sgl.select(f"action_{i}", ["Search", "Finish"])
            if s[f"action_{i}"] == "Search":
                s += " [" + sgl.gen(stop="]", max_tokens=12) + "].\n"
                s += f"Observation {i}:" + sgl.gen(stop=[".", "\n"], max_tokens=16) + ".\n"
            else:
                s += " [" + sgl.gen("answer", stop="]", max_tokens=12) + "].\n"
                break

    state = react.run(question="What country does the creator of Linux live in?", temperature=0.1)
    state.sync()  # `in` does not wait for pending gens
    actions = [state[f"action_{i}"] for i in range(1, 4) if f"action_{i}" in state]
    assert actions and all(a in ("Search", "Finish") for a in actions)
    assert ("Finish" in actions) == ("answer" in state)
    assert actions.count("Finish") <= 1 and (actions[-1] == "Finish" or len(actions) == 3)


def parallel_decoding() -> None:
    fork_size = 3

    @sgl.function
    def parallel_decoding(s, topic):
        s += "Act as a helpful assistant.\n"
        s += "USER: Give some tips for " + topic + ".\n"
        s += "ASSISTANT: Okay. Here are " + str(fork_size) + " concise tips, each under 8 words:\n"
        for i in range(1, 1 + fork_size):
            s += f"{i}." + sgl.gen(max_tokens=8, stop=[".", "\n"]) + ".\n"
        forks = s.fork(fork_size)
        for i in range(fork_size):
            forks[i] += f"Now, I expand tip {i+1} into a detailed paragraph:\nTip {i+1}:"
            forks[i] += sgl.gen("detailed_tip", 12, stop=["\n\n"])  # max_tokens is gen's 2nd positional
        forks.join()
        s += "Here are these tips with detailed explanation:\n"
        for i in range(fork_size):
            s += f"Tip {i+1}:" + forks[i]["detailed_tip"] + "\n"
        s += "\nIn summary," + sgl.gen("summary", max_tokens=8)

    state = parallel_decoding.run(topic="writing a good blog post", temperature=0.3)
    tips = state["detailed_tip"]
    assert isinstance(tips, list) and len(tips) == fork_size
    assert isinstance(state["summary"], str)
    for i, tip in enumerate(tips):
        assert f"Tip {i+1}:" + tip + "\n" in state.text()


def parallel_encoding() -> None:
    @sgl.function
    def parallel_encoding(s, question, context_0, context_1, context_2):
        s += "USER: I will ask a question based on some statements.\n"
        s += "ASSISTANT: Sure. I will give the answer.\n"
        s += "USER: Please memorize these statements.\n"
        contexts = [context_0, context_1, context_2]
        forks = s.fork(len(contexts))
        forks += lambda i: f"Statement {i}: " + contexts[i] + "\n"
        forks.join(mode="concate_and_append")
        s += "Now, please answer the following question. Do not list options."
        s += "\nQuestion: " + question + "\n"
        s += "ASSISTANT:" + sgl.gen("answer", max_tokens=SHORT)

    contexts = ["Ethan is the father of Liam.", "Noah is the father of Julian.", "Oliver is the father of Carlos."]
    state = parallel_encoding.run(question="Who is the father of Julian?", context_0=contexts[0],
                                  context_1=contexts[1], context_2=contexts[2], temperature=0)
    expected = "".join(f"Statement {i}: {c}\n" for i, c in enumerate(contexts))
    assert expected + "Now, please answer" in state.text()
    assert isinstance(state["answer"], str)


def stream() -> None:
    @sgl.function
    def qa(s, question):
        s += sgl.system("You are a helpful assistant.")
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer"))

    state = qa(question="Tell me about Hawaii.", stream=True, max_new_tokens=SHORT)
    pieces = list(state.text_iter())
    assert pieces and "".join(pieces) == state.text()  # how pieces coalesce depends on timing
    state = qa(question="Tell me about Hawaii.", stream=True, max_new_tokens=SHORT)
    pieces = list(state.text_iter("answer"))
    assert "".join(pieces) == state["answer"]


def stream_async() -> None:
    @sgl.function
    def qa(s, question):
        s += "Q: " + question + "\nA:" + sgl.gen("answer", return_logprob=True)

    async def collect():
        state = qa(question="What is DNS?", stream=True, max_new_tokens=SHORT)
        chunks = [item async for item in state.text_async_iter("answer", return_meta_data=True)]
        return state, chunks

    state, chunks = asyncio.run(collect())
    assert "".join(chunk for chunk, _ in chunks) == state["answer"]
    meta = state.get_meta_info("answer")
    assert len(meta["output_token_logprobs"]) == meta["completion_tokens"]


def regex() -> None:
    ip = r"((25[0-5]|2[0-4]\d|[01]?\d\d?).){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"

    @sgl.function
    def regex_gen(s):
        s += "Q: What is the IP address of the Google DNS servers?\n"
        s += "A: " + sgl.gen("answer", temperature=0, regex=ip, max_tokens=32)

    assert re.fullmatch(ip, regex_gen.run()["answer"])


def dtype_gen() -> None:
    @sgl.function
    def dtype_gen(s):
        s += "Q: What is the full name of DNS?\n"
        s += "A: The full name is " + sgl.gen("str_res", dtype=str, stop="\n", max_tokens=16) + "\n"
        s += "Q: Which year was DNS invented?\n"
        s += "A: " + sgl.gen("int_res", dtype=int, max_tokens=8) + "\n"
        s += "Q: What is the value of pi?\n"
        s += "A: " + sgl.gen("float_res", dtype=float, max_tokens=8) + "\n"
        s += "Q: Is the sky blue?\n"
        s += "A: " + sgl.gen("bool_res", dtype=bool, max_tokens=4) + "\n"

    state = dtype_gen.run()
    int(state["int_res"])
    float(state["float_res"])
    assert state["bool_res"] in ("True", "False")
    assert state["str_res"].startswith('"')  # the stop "\n" may cut before the closing quote


def min_tokens() -> None:
    @sgl.function
    def short_answer(s):
        s += sgl.user("What is 1+1? Answer with one digit.")
        s += sgl.assistant(sgl.gen("answer", min_tokens=12, max_tokens=16))

    state = short_answer.run(temperature=0)
    assert 12 <= state.get_meta_info("answer")["completion_tokens"] <= 16


def run_batch_order() -> None:
    @sgl.function
    def echo(s, index, word):
        with s.var_scope("echo"):
            s += word
        s += " is item " + str(index) + ":" + sgl.gen("note", max_tokens=4)

    words = [f"w{i}" for i in range(8)]
    states = echo.run_batch([{"index": i, "word": w} for i, w in enumerate(words)], num_threads=4, progress_bar=True)
    assert [st["echo"] for st in states] == words
    lazy = echo.run_batch([(i, w) for i, w in enumerate(words)], generator_style=True)
    assert [st["echo"] for st in lazy] == words
    assert echo.run_batch([]) == []


def var_scope_and_copy() -> None:
    @sgl.function
    def scoped(s):
        s += "Name:"
        with s.var_scope("name"):
            s += sgl.gen(max_tokens=4, stop="\n")
        with s.copy() as c:
            c += " (draft)" + sgl.gen("draft", max_tokens=4)
        s += "."

    state = scoped.run()
    assert state.text() == "Name:" + state["name"] + "."
    assert isinstance(state["draft"], list) and len(state["draft"]) == 1


def prefix_reuse() -> None:
    # A few-shot prefix of ~200 tokens shared by 16 programs: run_batch caches it first.
    shots = "".join(f"Example {i}: the number {i} is written as {i}.\n" for i in range(12))

    @sgl.function
    def few_shot(s, n):
        s += shots
        s += "Example " + str(n) + ": the number " + str(n) + " is written as" + sgl.gen("x", max_tokens=2)

    states = few_shot.run_batch([{"n": 100 + i} for i in range(16)], temperature=0)
    assert [st.error() for st in states] == [None] * 16
    cached = [st.get_meta_info("x")["cached_tokens"] for st in states]
    assert sum(1 for c in cached if c > 0) >= 15, cached


ALL_PROGRAMS = [
    few_shot_qa, mt_bench, select, select_methods, decode_int, decode_json_regex, decode_json,
    json_schema, expert_answer, tool_use, react, parallel_decoding, parallel_encoding, stream,
    stream_async, regex, dtype_gen, min_tokens, run_batch_order, var_scope_and_copy, prefix_reuse,
]
