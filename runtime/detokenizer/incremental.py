"""Incremental detokenization and stop-string text hygiene (pure logic: no processes, no sockets).

Token ids arrive a few at a time; the text must grow without ever showing half a character.
vLLM/SGLang's scheme keeps, per request, two offsets into its ids:

    decode_ids:  [ ... | surrounding ids | read ids (new) ]
                       ^surr_offset      ^read_offset

The surrounding ids are decoded once alone and once followed by the new ids; the new text is the
difference. Decoding in context matters because byte-level BPE splits one character over several
tokens, and SentencePiece drops a leading space when a token is decoded alone. New text that ends
in U+FFFD (an incomplete UTF-8 sequence) is not committed: the offsets stay, more ids come, and
meanwhile only its printable prefix (`find_printable_text`) is shown. On finish, everything left is
flushed and the matched stop token or stop string is trimmed (unless `no_stop_trim`).

`detokenize_batch` does one `tokenizer.batch_decode` for many requests (what a detokenizer process
runs per message); `IncrementalDetokenizer` is the one-request convenience returning deltas.
Finish reasons are accepted as objects with `to_json()` or as their JSON dicts (what crosses
process boundaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

REPLACEMENT_CHAR = "\ufffd"
# Prompt ids kept as decoding context for the first output token (SGLang's
# INIT_INCREMENTAL_DETOKENIZATION_OFFSET).
INIT_CONTEXT_TOKENS = 5

FinishLike = Any  # a BaseFinishReason, its to_json() dict, or None
BoolOrList = Union[bool, Sequence[bool]]


@dataclass
class DecodeState:
    """Per-request detokenizer state (SGLang's DecodeStatus)."""

    decoded_text: str = ""  # committed text: complete characters only
    decode_ids: list[int] = field(default_factory=list)  # context ids + output ids so far
    surr_offset: int = 0
    read_offset: int = 0
    vid: int = 0  # bumped by the scheduler when it rewrites output ids; a new vid means a new state

    @classmethod
    def from_context(
        cls, context_ids: Sequence[int] = (), decoded_text: str = "", vid: int = 0
    ) -> "DecodeState":
        """A fresh state whose first new ids are decoded after the last few `context_ids`."""
        context = [int(t) for t in context_ids][-INIT_CONTEXT_TOKENS:]
        return cls(decoded_text, context, 0, len(context), vid)


# --------------------------------------------------------------------- stop strings and trimming


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, Optional[str]]:
    """(index, stop) of the earliest stop string in `text` (ties: list order), or (-1, None)."""
    best_index, best = -1, None
    for stop in stops:
        if not stop:
            continue  # an empty stop string would end every request at once
        index = text.find(stop)
        if index != -1 and (best_index == -1 or index < best_index):
            best_index, best = index, stop
    return best_index, best


def check_stop_str(tail_text: str, stops: Sequence[str], decoded_text: str = "") -> Optional[str]:
    """The stop string found in the decoded tail (or in `decoded_text`), else None.

    The scheduler decodes the last `stop_str_max_len + 1` output tokens into `tail_text`, so a
    stop string split over several tokens is still seen as soon as it is complete.
    """
    _, matched = find_stop(tail_text, stops)
    if matched is None and decoded_text:
        _, matched = find_stop(decoded_text, stops)
    return matched


def _matched(finish_reason: FinishLike) -> Any:
    if finish_reason is None:
        return None
    as_json = finish_reason if isinstance(finish_reason, dict) else finish_reason.to_json()
    return as_json.get("matched")


def trim_matched_ids(ids: list[int], finish_reason: FinishLike, no_stop_trim: bool = False) -> list[int]:
    """Drop the matched EOS / stop token (the last id) so it is never decoded into the text."""
    matched = _matched(finish_reason)
    if no_stop_trim or not ids or isinstance(matched, bool) or not isinstance(matched, int):
        return ids
    return ids[:-1]


def trim_output(text: str, finish_reason: FinishLike, no_stop_trim: bool = False) -> str:
    """Cut a matched stop string at its first occurrence (the stop string itself is removed)."""
    matched = _matched(finish_reason)
    if no_stop_trim or not isinstance(matched, str) or not matched:
        return text
    index = text.find(matched)
    return text if index == -1 else text[:index]


# --------------------------------------------------------------------- printable text


def _is_cjk(ch: str) -> bool:
    # CJK ideographs are words on their own (no spaces between them), so each one is printable.
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def find_printable_text(text: str) -> str:
    """The longest prefix of held-back text that is safe to show: no U+FFFD, whole words only.

    Text stops before the first U+FFFD (a character still being assembled). Then, as in SGLang and
    HF's TextStreamer, a trailing partial word is held back: the cut is after the last whitespace
    or CJK ideograph, unless the text already ends in one. (SGLang also shows all but the last
    character after a CJK one; that rule can shrink the shown text when more bytes arrive, so
    it is left out: with these two rules, more text never shows less.)
    """
    cut = text.find(REPLACEMENT_CHAR)
    if cut != -1:
        text = text[:cut]
    if not text or text[-1].isspace() or _is_cjk(text[-1]):
        return text
    for i in range(len(text) - 1, -1, -1):
        if text[i].isspace() or _is_cjk(text[i]):
            return text[: i + 1]
    return ""


# --------------------------------------------------------------------- batched detokenization


def _per_request(value: BoolOrList, n: int, name: str) -> list[bool]:
    if isinstance(value, bool):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} must be a bool or have one entry per request ({n}), got {len(values)}.")
    return values


def _batch_decode(
    tokenizer: Any, id_lists: list[list[int]], skip: list[bool], spaces: list[bool]
) -> list[str]:
    """One batch_decode per distinct (skip_special_tokens, spaces_between_special_tokens) pair.

    SGLang applies the first request's flags to the whole batch (a quirk); grouping honours each
    request's own flags and is still a single call in the usual case.
    """
    texts: list[str] = [""] * len(id_lists)
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, key in enumerate(zip(skip, spaces)):
        groups.setdefault(key, []).append(i)
    for (skip_special, spaces_between), idx in groups.items():
        decoded = tokenizer.batch_decode(
            [id_lists[i] for i in idx],
            skip_special_tokens=skip_special,
            spaces_between_special_tokens=spaces_between,
        )
        for i, text in zip(idx, decoded):
            texts[i] = text
    return texts


def _advance(state: DecodeState, new_text: str, finished: bool) -> str:
    """Commit or hold back `new_text`; return the untrimmed cumulative output."""
    if finished:
        return state.decoded_text + new_text
    if new_text and not new_text.endswith(REPLACEMENT_CHAR):
        state.decoded_text += new_text
        state.surr_offset = state.read_offset
        state.read_offset = len(state.decode_ids)
        return state.decoded_text
    return state.decoded_text + find_printable_text(new_text)


def detokenize_batch(
    tokenizer: Any,
    states: Sequence[DecodeState],
    finish_reasons: Optional[Sequence[FinishLike]] = None,
    no_stop_trim: Optional[Sequence[bool]] = None,
    skip_special_tokens: BoolOrList = True,
    spaces_between_special_tokens: BoolOrList = True,
) -> list[str]:
    """Advance every state by the ids appended to its `decode_ids`; return cumulative output texts.

    The caller appends new ids to `state.decode_ids` first. A request with a finish reason is
    flushed completely and trimmed; others show only complete characters.
    """
    n = len(states)
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * n
    keep = _per_request(False if no_stop_trim is None else no_stop_trim, n, "no_stop_trim")
    if len(reasons) != n:
        raise ValueError(f"finish_reasons must have one entry per request ({n}), got {len(reasons)}.")
    skip = _per_request(skip_special_tokens, n, "skip_special_tokens")
    spaces = _per_request(spaces_between_special_tokens, n, "spaces_between_special_tokens")
    surr_ids = [s.decode_ids[s.surr_offset : s.read_offset] for s in states]
    read_ids = [
        trim_matched_ids(s.decode_ids[s.surr_offset :], r, k) for s, r, k in zip(states, reasons, keep)
    ]
    texts = _batch_decode(tokenizer, surr_ids + read_ids, skip * 2, spaces * 2)
    outputs = []
    for i, state in enumerate(states):
        surr_text, read_text = texts[i], texts[n + i]
        output = _advance(state, read_text[len(surr_text) :], reasons[i] is not None)
        outputs.append(trim_output(output, reasons[i], keep[i]))
    return outputs


class IncrementalDetokenizer:
    """One request's streaming detokenizer: feed ids, get the new printable text back."""

    def __init__(
        self,
        tokenizer: Any,
        context_ids: Sequence[int] = (),
        *,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        no_stop_trim: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.state = DecodeState.from_context(context_ids)
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.no_stop_trim = no_stop_trim
        self.text = ""  # the cumulative output so far (final text once finished)

    def step(self, new_ids: Sequence[int], finish_reason: FinishLike = None) -> str:
        """Append `new_ids` and return the text that became printable.

        Pass a finish reason with the last ids to flush held-back text and trim the stop. A
        trim that removes already-streamed characters (a stop string that was shown in part)
        yields "" and shortens `self.text`, as SGLang's cumulative text does.
        """
        self.state.decode_ids.extend(int(t) for t in new_ids)
        (output,) = detokenize_batch(
            self.tokenizer,
            [self.state],
            [finish_reason],
            [self.no_stop_trim],
            self.skip_special_tokens,
            self.spaces_between_special_tokens,
        )
        delta = output[len(self.text) :] if output.startswith(self.text) else ""
        self.text = output
        return delta
