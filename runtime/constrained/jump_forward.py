"""Compressed FSM for jump-forward decoding: the text a state forces, found once per state.

A state *forces* a byte when every way to continue starts with that byte and the state is not
accepting (accepting states may also end, so they never force). Following forced bytes gives the
compressed edge ``state --"forced text"--> state'``; the scheduler appends that text without
decoding it (SGLang's compressed FSM, sglang-reference.md §3.6).

Where the bytes come from: ``ForcedPathTable`` walks the token ``Index`` itself through its
single-byte tokens. In a token index built from a vocabulary that has a token for byte ``b``,
byte ``b`` is a live move from state ``s`` exactly when that token is allowed in ``s`` (any longer
token starting with ``b`` passes through the same byte-level state). So the set of allowed
single-byte tokens *is* the set of next bytes, and the state reached is the token index's own
state: no second automaton, no dialect mismatch and no char/token state mapping to keep in sync.
Bytes without a single-byte token (rare: GPT-2 style vocabularies have all 256) are checked
through the longer tokens that start with them; if any is allowed the state does not force.

``CharDfaJumpTable`` is the textbook version over interegular's character DFA of the regex; it
is the slow reference the tests compare the fast table against.
"""

from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["ForcedPathTable", "CharDfaJumpTable", "utf8_complete_prefix"]

MAX_JUMP_BYTES = 4096  # a forced chain longer than this is cut; the rest is forced again later


def utf8_complete_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that ends on a UTF-8 character boundary."""
    end = len(data)
    cont = 0
    while cont < 3 and cont < end and 0x80 <= data[end - 1 - cont] <= 0xBF:
        cont += 1
    lead_at = end - 1 - cont
    if lead_at < 0:
        return 0 if cont else end
    lead = data[lead_at]
    need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return end if cont + 1 >= need else lead_at


class ForcedPathTable:
    """Memoized state -> (forced bytes, end state) over an outlines-core ``Index``."""

    def __init__(self, index, vocab, is_accepting: Callable[[int], bool]) -> None:
        self.index = index
        self.is_accepting = is_accepting
        self._single = [(b, tid) for b, tid in enumerate(vocab.single_byte_ids) if tid is not None]
        self._orphans = self._orphan_tokens(vocab)
        self._step: Dict[int, Optional[Tuple[int, int]]] = {}
        self._tail: Dict[int, Tuple[bytes, int]] = {}

    @staticmethod
    def _orphan_tokens(vocab) -> List[int]:
        """Tokens whose first byte has no single-byte token (they can hide a second way on)."""
        have = {b for b, tid in enumerate(vocab.single_byte_ids) if tid is not None}
        eos = set(vocab.eos_token_ids)
        return [
            tid for tid, data in enumerate(vocab.token_bytes)
            if data and data[0] not in have and tid not in eos
        ]

    def forced_step(self, state: int) -> Optional[Tuple[int, int]]:
        """(byte, next state) if ``state`` forces exactly one byte, else None."""
        if state in self._step:
            return self._step[state]
        result = None
        if not self.is_accepting(state):
            moves = []
            for byte, tid in self._single:
                nxt = self.index.get_next_state(state, tid)
                if nxt is not None:
                    moves.append((byte, nxt))
                    if len(moves) > 1:
                        break
            if len(moves) == 1 and not self._orphan_allowed(state):
                result = moves[0]
        self._step[state] = result
        return result

    def _orphan_allowed(self, state: int) -> bool:
        return any(self.index.get_next_state(state, tid) is not None for tid in self._orphans)

    def forced(self, state: int) -> Tuple[bytes, int]:
        """All bytes forced from ``state`` and the state after them (b"" if none)."""
        path: List[Tuple[int, int]] = []
        on_path = set()
        cur = state
        tail: Optional[Tuple[bytes, int]] = None
        while cur not in self._tail:
            if cur in on_path or len(path) >= MAX_JUMP_BYTES:
                tail = (b"", cur)  # cut here without memoizing: cur may force more later
                break
            step = self.forced_step(cur)
            if step is None:
                self._tail[cur] = (b"", cur)
                break
            path.append((cur, step[0]))
            on_path.add(cur)
            cur = step[1]
        if tail is None:
            tail = self._tail[cur]
        for st, byte in reversed(path):
            tail = (bytes([byte]) + tail[0], tail[1])
            self._tail[st] = tail
        return tail if path else self._tail.get(state, tail)

    def walk(self, state: int, n_bytes: int) -> int:
        """State after the first ``n_bytes`` forced bytes from ``state``."""
        for _ in range(n_bytes):
            step = self.forced_step(state)
            if step is None:
                raise ValueError("walked past the forced bytes")
            state = step[1]
        return state


class CharDfaJumpTable:
    """Reference compressed FSM over interegular's character DFA of ``regex``.

    Characters are fed one at a time (``advance``); ``forced(state)`` follows states with one
    live outgoing single-character edge until an accepting or branching state.
    """

    def __init__(self, regex: str) -> None:
        import interegular

        self.fsm = interegular.parse_pattern(regex).to_fsm()
        self._chars = self._symbol_chars()
        self._live = self._live_states()

    def _symbol_chars(self) -> Dict[int, Optional[str]]:
        """Transition symbol -> its single character, or None for multi-char/"anything else"."""
        members: Dict[int, List[str]] = {}
        for ch, sym in self.fsm.alphabet._symbol_mapping.items():
            members.setdefault(sym, []).append(ch)
        return {sym: (chars[0] if len(chars) == 1 and isinstance(chars[0], str) else None)
                for sym, chars in members.items()}

    def _live_states(self) -> set:
        live = set(self.fsm.finals)
        changed = True
        while changed:
            changed = False
            for state, edges in self.fsm.map.items():
                if state not in live and any(n in live for n in edges.values()):
                    live.add(state)
                    changed = True
        return live

    @property
    def initial(self) -> int:
        return self.fsm.initial

    def advance(self, state: int, text: str) -> Optional[int]:
        for ch in text:
            sym = self.fsm.alphabet[ch]
            state = self.fsm.map.get(state, {}).get(sym)
            if state is None:
                return None
        return state

    def forced(self, state: int) -> str:
        out = []
        while state not in self.fsm.finals and len(out) < MAX_JUMP_BYTES:
            edges = [(s, n) for s, n in self.fsm.map.get(state, {}).items() if n in self._live]
            if len(edges) != 1 or self._chars.get(edges[0][0]) is None:
                break
            out.append(self._chars[edges[0][0]])
            state = edges[0][1]
        return "".join(out)
