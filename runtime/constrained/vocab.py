"""The model vocabulary as raw bytes, the form outlines-core's ``Index`` needs.

Token strings in a HF tokenizer are not the bytes the token stands for: GPT-2 style byte-level
BPE (SmolLM2, Llama 3, Qwen) maps each byte to a printable character (``Ġ`` is a space, ``Ċ`` a
newline), SentencePiece uses ``▁`` for a space and ``<0x0A>`` byte-fallback tokens. outlines-core
0.2.14 takes ``str`` keys literally as UTF-8, so a regex like `` a`` would never see ``Ġa``. We
decode every token to its bytes once, per tokenizer, and hand outlines-core a ``bytes`` map.
"""

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = ["TokenVocabulary"]

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _gpt2_char_to_byte() -> Dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes map to themselves, the other
    bytes to code points 256, 257, ... in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _decoder_kind(tokenizer, vocab: Dict[str, int]) -> str:
    """'byte_level', 'sentencepiece' or 'plain', from the fast tokenizer's decoder if any."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    desc = repr(getattr(backend, "decoder", None)) if backend is not None else ""
    if "ByteLevel" in desc:
        return "byte_level"
    if "Metaspace" in desc or "ByteFallback" in desc or ("Replace" in desc and "▁" in desc):
        return "sentencepiece"
    if "Ġ" in vocab or "Ċ" in vocab:  # slow GPT-2 style tokenizers have no decoder object
        return "byte_level"
    if any(t.startswith("▁") for t in vocab):
        return "sentencepiece"
    return "plain"


def _token_bytes(token: str, kind: str) -> Optional[bytes]:
    if kind == "byte_level":
        table = _gpt2_char_to_byte()
        try:
            return bytes(table[ch] for ch in token)
        except KeyError:
            return token.encode("utf-8")  # added tokens are stored as plain text
    if kind == "sentencepiece":
        m = _BYTE_TOKEN.match(token)
        if m:
            return bytes([int(m.group(1), 16)])
        return token.replace("▁", " ").encode("utf-8")
    return token.encode("utf-8")


@dataclass
class TokenVocabulary:
    """Bytes of every token id the grammar may allow, plus the end-of-sequence ids.

    ``token_bytes[i]`` is None for ids a grammar must never allow (special tokens, ids past the
    tokenizer). ``vocab_size`` is the model's logits width (may exceed the tokenizer's).
    """

    token_bytes: List[Optional[bytes]]
    eos_token_ids: List[int]
    vocab_size: int
    single_byte_ids: List[Optional[int]] = field(init=False)

    def __post_init__(self) -> None:
        if not self.eos_token_ids:
            raise ValueError("eos_token_ids must not be empty: grammars end with an EOS token")
        if len(self.token_bytes) > self.vocab_size:
            raise ValueError(f"{len(self.token_bytes)} tokens do not fit vocab_size {self.vocab_size}")
        for eos in self.eos_token_ids:
            if not 0 <= eos < self.vocab_size:
                raise ValueError(f"eos token id {eos} is outside the vocabulary (size {self.vocab_size})")
        self.single_byte_ids = [None] * 256
        for tid, data in enumerate(self.token_bytes):
            if data is not None and len(data) == 1 and self.single_byte_ids[data[0]] is None:
                self.single_byte_ids[data[0]] = tid

    @property
    def eos_token_id(self) -> int:
        return self.eos_token_ids[0]

    def bytes_to_ids(self) -> Dict[bytes, List[int]]:
        """The map outlines-core's ``Vocabulary`` takes (EOS ids and unusable ids left out)."""
        eos = set(self.eos_token_ids)
        out: Dict[bytes, List[int]] = {}
        for tid, data in enumerate(self.token_bytes):
            if data and tid not in eos:
                out.setdefault(data, []).append(tid)
        return out

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        vocab_size: Optional[int] = None,
        eos_token_ids: Optional[Iterable[int]] = None,
    ) -> "TokenVocabulary":
        """Decode a HF tokenizer's vocabulary; special tokens are excluded (only EOS is ever
        allowed, and only where the grammar accepts)."""
        vocab: Dict[str, int] = tokenizer.get_vocab()
        size = vocab_size if vocab_size is not None else max(vocab.values()) + 1
        if eos_token_ids is None:
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has no eos_token_id; pass eos_token_ids")
            eos_token_ids = [tokenizer.eos_token_id]
        special = set(getattr(tokenizer, "all_special_ids", []))
        added_text: Dict[int, str] = {}
        for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(tid)
            else:
                added_text[tid] = str(added)  # added tokens hold plain text, not byte symbols
        kind = _decoder_kind(tokenizer, vocab)
        table: List[Optional[bytes]] = [None] * min(size, max(vocab.values()) + 1)
        for token, tid in vocab.items():
            if tid < len(table) and tid not in special:
                text = added_text.get(tid)
                table[tid] = text.encode("utf-8") if text is not None else _token_bytes(token, kind)
        return cls(table, list(eos_token_ids), size)

    @classmethod
    def from_bytes(cls, token_bytes: Sequence[Optional[bytes]], eos_token_ids: Iterable[int],
                   vocab_size: Optional[int] = None) -> "TokenVocabulary":
        """Build from raw bytes (tests, synthetic vocabularies for benchmarks)."""
        table = list(token_bytes)
        return cls(table, list(eos_token_ids), vocab_size if vocab_size is not None else len(table))
