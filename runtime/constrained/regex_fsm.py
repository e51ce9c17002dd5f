"""Regex -> token-level automaton over our vocabulary (outlines-core ``Index``), plus the
per-state vocab bitmask rows that make mask filling a memcpy.

An outlines-core ``Index`` maps (state, token id) -> state; states are those of the byte-level
DFA of the regex reached at token boundaries. ``Guide.write_mask_into`` can write a state's
allowed-token bitmask, but it walks a hash map of up to ~49K entries per call (~50 µs at vocab
49K, measured). ``RegexIndex`` writes each state's row once, caches it (one packed int32 row per
visited state, shared by every request using the regex) and later fills are a ~6 KB copy.
The index is immutable once built; rows are added under the GIL (dict assignment is atomic).
"""

import re
import threading
from typing import Dict, Optional

import outlines_core
import torch

from .index_worker import IndexBuilder, IndexBuildLimit
from .jump_forward import ForcedPathTable
from .vocab import TokenVocabulary
from .vocab_mask import bitmask_words, set_bits

__all__ = ["RegexIndex", "OutlinesVocabulary", "strip_anchors"]


# End-of-match sentinel. outlines-core 0.2.14 mishandles regex-automata's one-byte match delay:
# from an accepting state it drops single-byte tokens that lead to a non-accepting state (for
# "ab|abcd" after "ab" the token "c" is never allowed; for "[0-9]+(\.[0-9]+)?" after "12" the
# token "." is not). We therefore compile "(?:R)" followed by U+10FFFF, read through a fake
# token, so that no state inside R is accepting for outlines-core; "R matched" becomes "the
# sentinel token is allowed here and ends in a final state". U+10FFFF is a noncharacter whose
# lead byte F4 appears only in planes 15-16 (private use), so tokens holding byte F4 are dropped
# from the vocabulary: that keeps every path into the sentinel out of reach of real tokens.
SENTINEL_REGEX = "\\x{10FFFF}"
SENTINEL_BYTES = "\U0010FFFF".encode("utf-8")
_SENTINEL_LEAD = SENTINEL_BYTES[0]


class OutlinesVocabulary:
    """Our ``TokenVocabulary`` plus the outlines-core ``Vocabulary`` built from it (built once
    per tokenizer: ~50 ms at 49K tokens), the sentinel token id and the EOS-only mask row."""

    def __init__(self, vocab: TokenVocabulary) -> None:
        self.vocab = vocab
        self.words = bitmask_words(vocab.vocab_size)
        self.sentinel_id = vocab.vocab_size  # outside the logits: never sampled
        self.index_words = bitmask_words(self.sentinel_id + 1)
        mapping = {data: ids for data, ids in vocab.bytes_to_ids().items() if _SENTINEL_LEAD not in data}
        mapping[SENTINEL_BYTES] = [self.sentinel_id]
        self.mapping = mapping  # what index_worker.IndexBuilder rebuilds the vocabulary from
        self.core = outlines_core.Vocabulary(vocab.eos_token_id, mapping)
        self.eos_row = torch.zeros(self.words, dtype=torch.int32)
        set_bits(self.eos_row, vocab.eos_token_ids)


def strip_anchors(regex: str) -> str:
    """Drop a leading ``^`` and an unescaped trailing ``$``: matching is always whole-output,
    and outlines-core refuses anchored patterns ("anchored universal start state")."""
    if regex.startswith("^"):
        regex = regex[1:]
    if regex.endswith("$"):
        backslashes = len(regex) - 1 - len(regex[:-1].rstrip("\\"))
        if backslashes % 2 == 0:
            regex = regex[:-1]
    return regex


def _class_end(regex: str, start: int) -> int:
    """Index just past the character class opening at ``regex[start] == "["``."""
    i = start + 1
    if i < len(regex) and regex[i] == "^":
        i += 1
    if i < len(regex) and regex[i] == "]":
        i += 1  # a leading "]" is a literal
    while i < len(regex) and regex[i] != "]":
        if regex[i] == "\\":
            i += 1
        elif regex[i] == "[" and regex.startswith("[:", i):
            i = regex.find(":]", i) + 1 if ":]" in regex[i:] else len(regex)
        elif regex[i] == "[":
            i = _class_end(regex, i) - 1  # Rust nested class
        i += 1
    return i + 1


def _parens_balanced(regex: str) -> bool:
    """Unescaped parentheses outside character classes balance (so "(?:R)" means R)."""
    depth, i = 0, 0
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(regex, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def _explain_build_error(regex: str, err: Exception) -> ValueError:
    msg = str(err)
    if "incompatible" in msg:
        return ValueError(f"regex {regex!r} needs characters that no token of the vocabulary can produce")
    try:
        re.compile(regex)
    except re.error as e:
        return ValueError(f"invalid regex {regex!r}: {e}")
    return ValueError(
        f"unsupported regex {regex!r}: look-around, back-references, \\b and anchors inside the "
        f"pattern cannot be compiled to an automaton ({msg})"
    )


class RegexIndex:
    """Compiled, immutable automaton for one regex, shared by all requests that use it."""

    def __init__(self, regex: str, vocab: OutlinesVocabulary, builder: Optional["IndexBuilder"] = None) -> None:
        """``builder`` (index_worker.IndexBuilder) builds the index out of process, memory-capped."""
        if not isinstance(regex, str):
            raise ValueError(f"regex must be a string, got {type(regex).__name__}")
        self.regex = regex
        self.vocab = vocab
        body = strip_anchors(regex)
        if not _parens_balanced(body):
            raise _explain_build_error(body, ValueError("unbalanced parenthesis"))
        pattern = f"(?:{body}){SENTINEL_REGEX}"
        try:
            self.index = builder.build(pattern) if builder is not None else outlines_core.Index(pattern, vocab.core)
        except IndexBuildLimit:
            raise
        except (ValueError, RuntimeError, OverflowError) as e:
            raise _explain_build_error(body, e) from None
        self.initial_state: int = self.index.get_initial_state()
        self._accepting: Dict[int, bool] = {}
        self._rows: Dict[int, torch.Tensor] = {}
        self._distinct: Dict[bytes, torch.Tensor] = {}
        # rows of the states that force no text: the scheduler's fast path (OutlinesGrammar.plain_row)
        self.plain_rows: Dict[int, torch.Tensor] = {}
        self._row_lock = threading.Lock()
        self.jump_table = ForcedPathTable(self.index, vocab.vocab, self.is_accepting)

    def is_accepting(self, state: int) -> bool:
        """The text so far fully matches the regex (EOS is allowed here)."""
        acc = self._accepting.get(state)
        if acc is None:
            after = self.index.get_next_state(state, self.vocab.sentinel_id)
            acc = after is not None and self.index.is_final_state(after)
            self._accepting[state] = acc
        return acc

    def next_state(self, state: int, token_id: int) -> Optional[int]:
        return self.index.get_next_state(state, token_id)

    def new_guide(self) -> "outlines_core.Guide":
        return outlines_core.Guide(self.index)

    def mask_row(self, state: int, guide: "outlines_core.Guide") -> torch.Tensor:
        """Packed allowed-token row of ``state``; ``guide`` must currently be in ``state``.

        The first visit asks outlines-core to write the row (~50 µs at 49K), later visits reuse it.
        """
        row = self._rows.get(state)
        if row is None:
            row = self._build_row(state, guide)
            with self._row_lock:
                # states with equal rows share one tensor (the counted characters of a bounded
                # string are a state each): less memory, and one device copy (DeviceRowCache)
                row = self._distinct.setdefault(row.numpy().tobytes(), row)
                row = self._rows.setdefault(state, row)
                if not self.jump_table.forced(state)[0]:
                    self.plain_rows[state] = row
        return row

    def has_row(self, state: int) -> bool:
        return state in self._rows

    def _build_row(self, state: int, guide: "outlines_core.Guide") -> torch.Tensor:
        full = torch.zeros(self.vocab.index_words, dtype=torch.int32)
        guide.write_mask_into(full.data_ptr(), full.numel(), full.element_size())
        row = full[: self.vocab.words].clone()
        sentinel = self.vocab.sentinel_id
        if sentinel < row.numel() * 32:  # the fake token shares the last word: clear its bit
            row[sentinel // 32] &= ~(1 << (sentinel % 32)) if sentinel % 32 < 31 else 0x7FFFFFFF
        if self.is_accepting(state):
            set_bits(row, self.vocab.vocab.eos_token_ids)
        return row

    def drop_cached_rows(self) -> None:
        """Forget the per-state mask rows (benchmarks time the first visits again)."""
        with self._row_lock:
            self._rows = {}
            self._distinct = {}
            self.plain_rows = {}

    @property
    def cached_rows(self) -> int:
        return len(self._rows)
