"""The grammar contract the scheduler uses, and the compile cache every backend shares.

Scheduler usage, per request with a constraint::

    fut = backend.get_or_compile("json", schema_text)      # never blocks; compiles on a thread
    ...                                                     # request waits in the grammar queue
    grammar = fut.result()                                  # a ValueError fails this request only

Per decode step, for the whole batch::

    mask = BaseGrammar.allocate_vocab_mask(vocab_size, batch_size, device)  # all allowed
    for row, req in enumerate(batch):
        if req.grammar is not None:
            req.grammar.fill_vocab_mask(mask, row)
    mask = BaseGrammar.move_vocab_mask(mask, logits.device)
    BaseGrammar.apply_vocab_mask(logits, mask)          # blocked logits -> -inf, one op
    ... sample ...
    req.grammar.accept_token(next_token_id)             # EOS accepted only in accepting states

Jump-forward (after accepting a token, when enabled)::

    helper = grammar.try_jump_forward(tokenizer)
    if helper is not None:
        jump_str, next_state = grammar.jump_forward_str_state(helper)
        # re-tokenize prompt + output text + jump_str; abort if the prompt's tokens changed
        grammar.jump_and_retokenize(old_output_ids, new_output_ids, next_state)
        # ValueError -> the jump is abandoned and the grammar keeps its old state

The mask is a packed int32 bitmask ``[batch, ceil(vocab/32)]``, bit set = allowed
(see ``vocab_mask.py``).
"""

import abc
import concurrent.futures as cf
import logging
import threading
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from .vocab_mask import allocate_token_bitmask, apply_token_bitmask_

__all__ = ["BaseGrammar", "BaseGrammarBackend", "GRAMMAR_KINDS"]

logger = logging.getLogger(__name__)

GRAMMAR_KINDS = ("json", "regex", "choices", "ebnf")


class BaseGrammar(abc.ABC):
    """Per-request matcher over a shared compiled automaton."""

    finished: bool = False  # set by accept_token(EOS); the scheduler may also set it

    @abc.abstractmethod
    def accept_token(self, token_id: int) -> None:
        """Advance by one sampled token; ValueError if the grammar does not allow it."""

    @abc.abstractmethod
    def is_terminated(self) -> bool:
        """True once an EOS token was accepted."""

    @abc.abstractmethod
    def fill_vocab_mask(self, vocab_mask: torch.Tensor, idx: int) -> None:
        """Write this request's allowed tokens into row ``idx`` of a packed mask."""

    def plain_row(self) -> Optional[torch.Tensor]:
        """The packed allowed-token row of the current state when the grammar caches rows and the
        state forces no text; None otherwise. The scheduler masks with such a row directly (no
        ``fill_vocab_mask``, no jump-forward check; on CUDA by its slot in a device table): the
        per-token fast path. The same row object comes back for every visit of the state (and
        may be shared by states with equal rows); it must not be modified."""
        return None

    @abc.abstractmethod
    def copy(self) -> "BaseGrammar":
        """An independent matcher in the same state."""

    @abc.abstractmethod
    def try_jump_forward(self, tokenizer=None) -> Optional[Tuple[List[int], object]]:
        """(suffix_ids, helper) when the current state forces text, else None."""

    @abc.abstractmethod
    def jump_forward_str_state(self, helper) -> Tuple[str, object]:
        """(forced text, state after it) for a helper from ``try_jump_forward``."""

    @abc.abstractmethod
    def jump_and_retokenize(self, old_output_ids: Sequence[int], new_output_ids: Sequence[int], next_state) -> None:
        """Move to the state after ``new_output_ids`` (the re-tokenized output + forced text)."""

    @staticmethod
    def allocate_vocab_mask(vocab_size: int, batch_size: int, device=None) -> torch.Tensor:
        """A CPU packed mask with every token allowed; fill rows, then ``move_vocab_mask``."""
        return allocate_token_bitmask(batch_size, vocab_size)

    @staticmethod
    def move_vocab_mask(vocab_mask: torch.Tensor, device) -> torch.Tensor:
        return vocab_mask.to(device, non_blocking=True)

    @staticmethod
    def apply_vocab_mask(logits: torch.Tensor, vocab_mask: torch.Tensor) -> None:
        apply_token_bitmask_(logits, vocab_mask)


CompileFn = Callable[[str, str], object]


class BaseGrammarBackend(abc.ABC):
    """Compile grammars on a thread pool, cache compiled automata (LRU by kind and text), and
    hand every caller a fresh per-request matcher over the shared compiled object."""

    def __init__(self, num_threads: int = 4, cache_size: int = 32, compile_timeout_s: Optional[float] = 60.0):
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._executor = cf.ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="grammar-compile")
        self._cache: "OrderedDict[Tuple[str, str], cf.Future]" = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = cache_size
        self.compile_timeout_s = compile_timeout_s

    # -------------------------------------------------------------- subclass hooks

    @abc.abstractmethod
    def compile(self, kind: str, text: str) -> object:
        """Build the immutable compiled automaton (runs on a pool thread). ValueError on bad input."""

    @abc.abstractmethod
    def new_grammar(self, compiled: object) -> BaseGrammar:
        """A fresh matcher in the initial state over ``compiled``."""

    # -------------------------------------------------------------- public API

    def get_or_compile(self, kind: str, text: str) -> "cf.Future[BaseGrammar]":
        """Future of a fresh grammar for (kind, text). Never compiles on the calling thread.

        Bad input (invalid regex or schema, unsupported keyword) and compile time-outs resolve
        the future with a ValueError; only a wrong ``kind``/``text`` type raises here.
        """
        if kind not in GRAMMAR_KINDS:
            raise ValueError(f"unknown grammar kind {kind!r}; expected one of {GRAMMAR_KINDS}")
        if not isinstance(text, str):
            raise ValueError(f"grammar text must be a string, got {type(text).__name__}")
        compiled = self._compiled_future(kind, text)
        return self._matcher_future(compiled)

    def get_cached(self, kind: str, text: str) -> Optional[BaseGrammar]:
        """A fresh grammar if (kind, text) is compiled already, else None (no compile started)."""
        with self._lock:
            fut = self._cache.get((kind, text))
        if fut is None or not fut.done() or fut.exception() is not None:
            return None
        return self.new_grammar(fut.result())

    def run_async(self, fn: Callable, *args) -> cf.Future:
        """Run ``fn(*args)`` on the compile pool (work that comes before a compile)."""
        return self._executor.submit(fn, *args)

    def reset(self) -> None:
        """Drop every cached grammar (flush_cache). Running compiles finish unobserved."""
        with self._lock:
            self._cache.clear()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------- internals

    def _compiled_future(self, kind: str, text: str) -> cf.Future:
        key = (kind, text)
        with self._lock:
            fut = self._cache.get(key)
            if fut is not None:
                self._cache.move_to_end(key)
                return fut
            fut = self._executor.submit(self._compile_logged, kind, text)
            self._cache[key] = fut
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return fut

    def _compile_logged(self, kind: str, text: str) -> object:
        try:
            return self.compile(kind, text)
        except ValueError:
            raise
        except Exception as e:  # a library crash must still fail only this request
            logger.exception("grammar compilation crashed")
            raise ValueError(f"grammar compilation failed: {type(e).__name__}: {e}") from e

    def _matcher_future(self, compiled: cf.Future) -> "cf.Future[BaseGrammar]":
        out: cf.Future = cf.Future()
        out.set_running_or_notify_cancel()

        def resolve(done: cf.Future) -> None:
            if out.done():
                return  # timed out already
            try:
                grammar = self.new_grammar(done.result())
            except BaseException as e:  # ValueError from compile, or anything from the matcher
                _settle(out, exception=e)
            else:
                _settle(out, result=grammar)

        if not compiled.done() and self.compile_timeout_s is not None:
            timer = threading.Timer(self.compile_timeout_s, _settle, kwargs={
                "fut": out,
                "exception": ValueError(f"grammar compilation timed out after {self.compile_timeout_s:g} s"),
            })
            timer.daemon = True
            timer.start()
            out.add_done_callback(lambda _: timer.cancel())
        compiled.add_done_callback(resolve)
        return out


def _settle(fut: cf.Future, result=None, exception: Union[BaseException, None] = None) -> None:
    """Resolve ``fut`` once; later attempts (timer vs. compile racing) are ignored."""
    try:
        if exception is not None:
            fut.set_exception(exception)
        else:
            fut.set_result(result)
    except cf.InvalidStateError:
        pass
