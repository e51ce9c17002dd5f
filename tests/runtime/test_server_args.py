"""Every ServerArgs field does what it says or is refused at parse time.

The central test scans runtime/ and lang/ for reads of server-args fields; each field nobody
reads must be refused (a ValueError naming the flag) for every non-default value tried, so a
new field that is neither wired nor refused fails here. The rest covers the refusals the issue
named, --help, the served model name, --prefill-only-one-req and --grammar-backend wiring.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any, List, Set

import pytest

import sgl.runtime.server_args as server_args_module
from sgl.runtime.server_args import ServerArgs, default_served_model_name, make_parser

ROOT = Path(__file__).resolve().parents[2]
SCANNED = (ROOT / "runtime", ROOT / "lang")
EXCLUDED = {ROOT / "runtime" / "server_args.py"}
FIELDS = dataclasses.fields(ServerArgs)


# ---- the scan ----------------------------------------------------------------------------------
def _is_server_args(node: ast.AST, aliases: Set[str]) -> bool:
    """`server_args`, `<anything>.server_args`, or a local name assigned from one of those."""
    if isinstance(node, ast.Name):
        return node.id == "server_args" or node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr == "server_args"


def fields_read_in(source: str) -> Set[str]:
    """Names read as `<server args>.name` or `getattr(<server args>, "name", ...)`."""
    tree = ast.parse(source)
    aliases = {name for node in ast.walk(tree) if isinstance(node, ast.Assign) for name in _aliases(node)}
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _is_server_args(node.value, aliases):
            read.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and _is_server_args(node.args[0], aliases)
              and isinstance(node.args[1], ast.Constant)):
            read.add(node.args[1].value)
    return read


def _aliases(node: ast.Assign) -> Set[str]:
    """Names bound to server args by `sa = x.server_args` or `sa, mc = x.server_args, ...`."""
    pairs = []
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            pairs += zip(target.elts, node.value.elts)
        else:
            pairs.append((target, node.value))
    return {t.id for t, v in pairs if isinstance(t, ast.Name) and _is_server_args(v, set())}


def fields_read() -> Set[str]:
    read: Set[str] = set()
    for top in SCANNED:
        for path in top.rglob("*.py"):
            if path not in EXCLUDED:
                read |= fields_read_in(path.read_text())
    return read


def test_scanner_finds_reads_through_aliases_and_getattr():
    source = (
        "def f(server_args, state, args):\n"
        "    sa = state.server_args\n"
        "    n, sb = 1, runner.server_args\n"
        "    x = server_args.a + sa.b + self.server_args.c + getattr(sa, 'd', 1) + sb.g\n"
        "    args.e\n"  # an argparse namespace, not server args
        "    server_args.f = 1\n"  # a write is not a read
    )
    assert fields_read_in(source) == {"a", "b", "c", "d", "g"}


def _non_default_values(f: dataclasses.Field, resolved: ServerArgs) -> List[Any]:
    """Values other than the resolved default: the refusal rule's examples, the other choices,
    and one generic value of the field's type."""
    current = getattr(resolved, f.name)
    rule = f.metadata.get("unsupported")
    values: List[Any] = list(rule.examples) if rule is not None else []
    type_text = str(f.type)
    if f.metadata.get("choices"):
        values += f.metadata["choices"]
    elif "List" in type_text:
        values.append([3])
    elif "bool" in type_text:
        values.append(not current)
    elif "float" in type_text:
        values.append((current or 0) + 1.5)
    elif "int" in type_text:
        values.append((current or 0) + 1)
    elif "str" in type_text:
        values.append((current or "") + "-other")
    return [v for v in values if v != current]


def test_every_field_is_read_or_refused():
    read = fields_read()
    resolved = ServerArgs()  # the defaults pass
    assert {"model_path", "chunked_prefill_size", "watchdog_timeout", "grammar_backend"} <= read  # the scan works
    unread = []
    for f in FIELDS:
        if f.name in read:
            continue
        if f.metadata.get("always"):
            # a switch that asks for what the runtime always does, e.g. "keep grammars off the disk"
            assert f.type == "bool" and f.default is False and "always" in f.metadata["help"], f.name
            continue
        unread.append(f.name)
        values = _non_default_values(f, resolved)
        assert values, f"no non-default value to try for {f.name}"
        for value in values:
            with pytest.raises(ValueError) as err:
                ServerArgs(**{f.name: value})
                pytest.fail(f"{f.name}={value!r} is accepted, but no code in runtime/ or lang/ reads {f.name}")
            flag = "--" + f.name.replace("_", "-")
            assert str(err.value).startswith(flag) and "not supported" in str(err.value), (f.name, value, err.value)
    assert unread, "every field is read: the refusal branch above went untested"


# ---- refusals the issue named, through ServerArgs and the CLI -----------------------------------
REFUSED = [
    ({"attention_backend": "flashinfer"}, "--attention-backend flashinfer", "planned"),
    ({"quantization": "fp8"}, "--quantization fp8", "quantization"),
    ({"cpu_offload_gb": 4}, "--cpu-offload-gb 4", "use 0"),
    ({"load_format": "bitsandbytes"}, "--load-format bitsandbytes", "safetensors"),
    ({"load_format": "npcache"}, "--load-format npcache", "safetensors"),
    ({"load_format": "layered"}, "--load-format layered", "safetensors"),
    ({"sampling_backend": "flashinfer"}, "--sampling-backend flashinfer", "pytorch"),
]


@pytest.mark.parametrize("kwargs,start,reason", REFUSED, ids=[next(iter(k.values())).__str__() for k, _, _ in REFUSED])
def test_unbuilt_values_are_refused(kwargs, start, reason):
    with pytest.raises(ValueError) as err:
        ServerArgs(**kwargs)
    assert str(err.value).startswith(start + " is not supported") and reason in str(err.value)


def test_cli_refuses_with_the_same_message(capsys):
    from sgl.runtime.server.launch import main

    assert main(["--attention-backend", "flashinfer"]) == 2
    err = capsys.readouterr().err
    assert "--attention-backend flashinfer is not supported" in err and "planned" in err


def test_xgrammar_refused_when_missing(monkeypatch):
    monkeypatch.setattr(server_args_module, "_installed", lambda module: False)
    with pytest.raises(ValueError, match=r"^--grammar-backend xgrammar is not supported: .*pip install xgrammar"):
        ServerArgs(grammar_backend="xgrammar")


def test_grammar_backend_reaches_the_scheduler(make_scheduler, monkeypatch):
    """The scheduler builds the backend the flag names (it used to build outlines whatever it said)."""
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        # pretend it is installed: the scheduler then tries to build xgrammar and says it is missing
        monkeypatch.setattr(server_args_module, "_installed", lambda module: True)
        with pytest.raises(ValueError, match="pip install xgrammar"):
            make_scheduler(grammar_backend="xgrammar")
    else:
        assert type(make_scheduler(grammar_backend="xgrammar").grammar.backend).__name__ == "XGrammarBackend"
    assert type(make_scheduler().grammar.backend).__name__ == "GrammarBackend"  # outlines


def test_watchdog_timeout_must_be_positive():
    with pytest.raises(ValueError, match="^--watchdog-timeout must be positive"):
        ServerArgs(watchdog_timeout=0)


# ---- --help --------------------------------------------------------------------------------------
def test_help_describes_every_flag_and_shows_its_default():
    parser = make_parser()
    actions = [a for a in parser._actions if a.dest != "help"]
    assert len(actions) == len(FIELDS)
    for action in actions:
        suffix = " (default: %(default)s)"
        assert action.help.endswith(suffix) and len(action.help) - len(suffix) >= 10, action.dest  # a description
    text = parser.format_help()
    assert "(default: 300)" in text and "(default: lpm)" in text and "(default: False)" in text
    assert text.count("(default:") == len(FIELDS)
    assert "{triton,torch_native,hip}" in text and "{pytorch}" in text  # accepted choices only


# ---- the served model name ------------------------------------------------------------------------
def test_served_name_of_the_default_model():
    assert ServerArgs().served_model_name == "SmolLM2-135M-Instruct"


@pytest.mark.parametrize("file_name,expected", [
    ("Tiny-Model.Q4_0.gguf", "Tiny-Model"),
    ("llama-3-8b-instruct-q4_k_m.gguf", "llama-3-8b-instruct"),
    ("Mistral-7B.IQ3_XS.gguf", "Mistral-7B"),
    ("qwen2.5-0.5b.f16.gguf", "qwen2.5-0.5b"),
    ("plain.gguf", "plain"),
])
def test_served_name_of_gguf_files(tmp_path, file_name, expected):
    path = tmp_path / file_name
    path.write_bytes(b"GGUF")  # the name comes from the file name; the file is not read
    assert default_served_model_name(str(path)) == expected


def test_served_name_of_directories_and_shipped_configs(tmp_path):
    model_dir = tmp_path / "Llama-3.1-8B-Instruct"
    model_dir.mkdir()
    assert ServerArgs(model_path=str(model_dir) + "/").served_model_name == "Llama-3.1-8B-Instruct"
    assert ServerArgs(model_path="llama-3.1-8b", load_format="dummy").served_model_name == "llama-3.1-8b"
    assert ServerArgs(served_model_name="mine").served_model_name == "mine"


# ---- --prefill-only-one-req ------------------------------------------------------------------------
def test_prefill_only_one_req(make_scheduler, tokenizer):
    from sgltest.runtime_helpers import PROMPTS, run_all, submit

    for flag, first_batch in ((False, 3), (True, 1)):
        sched = make_scheduler(prefill_only_one_req=flag, disable_overlap_schedule=True)
        for i, prompt in enumerate(PROMPTS[:3]):
            submit(sched, tokenizer, f"r{i}", tokenizer.encode(prompt), max_new_tokens=4, temperature=0)
        sched.step()
        assert len(sched.running) == first_batch, flag
        results = run_all(sched)
        assert sorted(results) == ["r0", "r1", "r2"] and all(len(r["ids"]) == 4 for r in results.values())


def test_xgrammar_backend_decodes_ebnf_in_the_scheduler(make_scheduler, tokenizer):
    """With the package installed, --grammar-backend xgrammar serves ebnf (outlines refuses it)."""
    pytest.importorskip("xgrammar")
    from sgltest.runtime_helpers import run_all, submit

    ebnf = 'root ::= "yes" | "no" | "maybe"'
    ids = tokenizer.encode("Answer yes or no:")
    outlines, xgrammar = make_scheduler(), make_scheduler(grammar_backend="xgrammar")
    for sched in (outlines, xgrammar):
        submit(sched, tokenizer, "e", ids, max_new_tokens=8, temperature=0, ebnf=ebnf)
    refused = run_all(outlines)["e"]["out"].finished_reason
    assert refused.to_json()["type"] == "abort"
    text = tokenizer.decode(run_all(xgrammar)["e"]["ids"], skip_special_tokens=True)
    assert text in ("yes", "no", "maybe")
