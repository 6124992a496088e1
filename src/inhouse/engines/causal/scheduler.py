"""Continuous batching: the rows of a model (each request, each of its `n` choices) join and leave one running
decode batch step by step, each with its own sampling, stop strings, adapter and sink; one thread per model runs
the steps, so a long generation never holds a short one behind it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from inhouse.engines.causal.generation import Generated, SamplingParams
    from inhouse.engines.causal.multi_lora import Adapter
    from inhouse.engines.causal.sampling import RowSampler

log = logging.getLogger(__name__)

# Called on the scheduler's thread, in order: (text, None, None) for each streamed delta, then ("", result, None)
# once, or ("", None, error) once if the row failed. A sink must not block; one that raises cancels its row.
Sink = Callable[[str, "Generated | None", "BaseException | None"], None]


@dataclass(eq=False)
class Row:
    """One choice being generated. `cancel()` may be called from any thread: the row leaves the batch before
    the next step (its KV cache rows freed) and its sink hears nothing more."""

    ids: list[int]
    params: SamplingParams
    adapter: Adapter | None
    sampler: RowSampler
    sink: Sink
    stream: bool  # deltas are delivered as the text grows (else only the result)
    background: bool  # batch work: joins only while no live row waits, and fills at most half the batch
    out: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text delivered so far
    cancelled: bool = False
    done: bool = False  # its result (or error) was delivered

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class _Fill:
    """A prefill under way: rows sharing one prompt and adapter, the cache of the tokens run so far."""

    rows: list[Row]
    cache: Any = None
    offset: int = 0  # prompt tokens in the cache


class Model(Protocol):
    """What the scheduler needs of an engine (CausalEngine provides it)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None, cache: Any, adapters: Sequence[Adapter | None]
                ) -> tuple[torch.Tensor, Any]:
        """One forward pass: row i runs with adapters[i]; returns the last position's logits per row
        ([rows, vocab], float32, a copy) and the cache (a transformers DynamicCache without sliding layers,
        made by the pass when `cache` is None)."""

    def eos(self) -> set[int]:
        """The tokens that end a row (where generate would stop)."""

    def text(self, ids: list[int]) -> str:
        """The text of new token ids (special tokens skipped)."""

    def finish(self, new_ids: list[int], params: SamplingParams, complete: bool = False) -> Generated:
        """The row's result from its new token ids; `complete`: its grammar's text is whole."""

    def batchable(self) -> bool:
        """Whether rows can run in the batch loop now (else one at a time through `solo`)."""

    def solo(self, row: Row, on_tokens: Callable[[list[int]], bool]) -> bool:
        """Generate the row alone, exactly as Hugging Face generate would (for models whose generation config
        adds processors the batch loop does not apply), handing new tokens to `on_tokens` (False: stop);
        returns whether its grammar is whole."""


class Scheduler:
    """Runs a model's rows in one decode batch. Bounds: at most `max_rows` rows, and rows x (widest cache +
    most tokens any row may still add) <= `max_tokens` (its KV cache at its largest), except a row that alone
    passes it, which runs alone. Rows past the bounds wait, in order, live rows first; the caller bounds how
    many wait (admission)."""

    def __init__(self, model: Model, max_rows: int, max_tokens: int, prefill_chunk: int = 512) -> None:
        self.model = model
        self.prefill_chunk = prefill_chunk
        self._eos: set[int] = set()  # the model's, read once a step
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self._cond = threading.Condition()
        self._pending: list[Row] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        # The running batch (touched by the scheduler's thread only): its rows, their KV cache, the mask of
        # its columns (left padding is 0), each row's next position and next input token.
        self._rows: list[Row] = []
        self._joining: list[Row] = []  # taken from _pending, not yet in _rows or _filling (or run solo)
        self._filling: list[_Fill] = []  # long prompts, run a chunk per step before their rows join
        self._cache: Any = None
        self._mask: Any = None
        self._pos: Any = None
        self._next: Any = None

    # -- any thread -----------------------------------------------------------------------------------------
    def submit(self, rows: Sequence[Row]) -> None:
        with self._cond:
            if self._stopped:
                raise RuntimeError("the model was unloaded")
            self._pending.extend(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chat-batch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def load(self) -> int:
        """Rows waiting, joining or running (read without the lock, for idleness). A row is always in one of
        the lists counted (it is made a joining row under the lock that takes it from the waiting ones), and
        may be in two for a moment, so each counts once."""
        rows = [*self._pending, *self._joining, *self._rows, *(r for f in self._filling for r in f.rows)]
        return len({id(r) for r in rows})

    def stop(self) -> None:
        """Ends the thread after its current step; rows still waiting or running fail."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    # -- the scheduler's thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        while True:
            with self._cond:
                while not self._stopped and not self._pending and not self._rows and not self._filling:
                    self._cond.wait()
                if self._stopped:
                    left = self._pending + self._rows + [r for f in self._filling for r in f.rows]
                    self._pending, self._rows, self._filling = [], [], []
                    break
                joining = self._take()
            try:
                with torch.inference_mode():
                    self._run(joining)
                self._joining = []
            except BaseException as exc:  # a failed pass fails the rows it carried, not the thread
                log.exception("generation step failed")
                filling = [r for f in self._filling for r in f.rows]
                failed = [r for r in dict.fromkeys(joining + filling + self._rows) if not (r.done or r.cancelled)]
                self._reset()
                self._filling, self._joining = [], []
                for row in failed:
                    self._fail(row, exc)
        error = RuntimeError("the model was unloaded")
        for row in left:
            if not row.done:
                self._fail(row, error)

    def _run(self, joining: list[Row]) -> None:
        self._drop(lambda r: r.cancelled or r.done)
        self._eos = self.model.eos()
        if not self.model.batchable():
            for row in joining:
                self._solo(row)
        elif joining:
            self._prefill(joining)
        if self._filling and self._fill(self._filling[0]):
            self._filling.pop(0)
        if self._rows:
            self._step()

    def _take(self) -> list[Row]:
        """The waiting rows that fit in the batch now (called holding the lock)."""
        self._pending = [r for r in self._pending if not r.cancelled]
        if not self.model.batchable():
            self._joining = self._pending[:1]  # before it leaves _pending, as below
            del self._pending[:1]
            return self._joining
        live_waiting = any(not r.background for r in self._pending)
        filling = [r for f in self._filling for r in f.rows]
        running = len(self._rows) + len(filling)
        width = max([0 if not self._rows else int(self._mask.shape[1]), *(len(r.ids) for r in filling)])
        remaining = max((r.params.max_new_tokens - len(r.out) for r in self._rows + filling), default=0)
        background = sum(r.background for r in self._rows + filling)
        taken: list[Row] = []
        for row in sorted(self._pending, key=lambda r: r.background):  # stable: live first, then in order
            count = running + len(taken)
            if count >= self.max_rows:
                break
            if row.background and (live_waiting or background >= max(1, self.max_rows // 2)):
                break
            new_width = max(width, len(row.ids))
            new_remaining = max(remaining, row.params.max_new_tokens)
            if count and (count + 1) * (new_width + new_remaining) > self.max_tokens:
                break
            width, remaining = new_width, new_remaining
            background += row.background
            taken.append(row)
        self._joining = taken  # before they leave _pending: `load` always finds them
        for row in taken:
            self._pending.remove(row)
        return taken

    def _emit(self, row: Row, text: str, result: Generated | None, error: BaseException | None) -> None:
        try:
            row.sink(text, result, error)
        except Exception:  # the reader is gone (its loop closed): nothing more to tell it
            row.cancel()

    def _fail(self, row: Row, error: BaseException) -> None:
        row.done = True
        self._emit(row, "", None, error)

    def _advance(self, row: Row, logits: torch.Tensor) -> int | None:
        """Choose the row's next token from its logits: the token to feed next, or None once the row ended
        (its result delivered)."""
        token = row.sampler.choose(logits)
        if token is None:  # no token keeps its text valid: it ends as it is
            self._end(row, False)
            return None
        row.sampler.accept(token)
        row.out.append(token)
        params = row.params
        text = self.model.text(row.out) if row.stream or params.stop else ""
        stopped = stop_at(text, params.stop) >= 0
        if (token in self._eos or len(row.out) >= params.max_new_tokens or row.sampler.finished or stopped):
            self._end(row, row.sampler.finished)
            return None
        if row.stream:
            self._deliver(row, text)
        return token

    def _deliver(self, row: Row, text: str) -> None:
        """The row's text so far, less what could still turn into a stop string or a split character."""
        hold = max((len(s) for s in row.params.stop), default=0)
        safe = len(text.rstrip("\ufffd")) - hold
        if safe > row.sent:
            piece, row.sent = text[row.sent:safe], safe
            self._emit(row, piece, None, None)

    def _end(self, row: Row, complete: bool) -> None:
        row.done = True
        result = self.model.finish(row.out, row.params, complete)
        if row.stream and len(result.text) > row.sent:
            self._emit(row, result.text[row.sent:], None, None)
        self._emit(row, "", result, None)

    def _solo(self, row: Row) -> None:
        def on_tokens(tokens: list[int]) -> bool:
            row.out.extend(tokens)
            if row.stream:
                text = self.model.text(row.out)
                cut = stop_at(text, row.params.stop)
                self._deliver(row, text if cut < 0 else text[:cut])
            return not row.cancelled

        complete = self.model.solo(row, on_tokens)
        if not row.cancelled:
            self._end(row, complete)

    def _prefill(self, joining: list[Row]) -> None:
        """Start the joining rows' prompts: rows with the same prompt and adapter (such as the `n` choices of
        one request) share one prefill. A prompt of at most `prefill_chunk` tokens runs now; a longer one runs a
        chunk per step (_fill), so the rows already decoding keep their pace meanwhile."""
        groups: dict[tuple[tuple[int, ...], int], list[Row]] = {}
        for row in joining:
            groups.setdefault((tuple(row.ids), id(row.adapter)), []).append(row)
        for group in groups.values():
            if len(group[0].ids) <= self.prefill_chunk:
                self._fill(_Fill(group))
            else:
                self._filling.append(_Fill(group))

    def _fill(self, fill: _Fill) -> bool:
        """Run the next chunk of a prefill; once its prompt is in, choose the rows' first tokens and add those
        that go on to the batch. Returns whether the prefill is over (done, or every row cancelled)."""
        import torch

        rows = [r for r in fill.rows if not r.cancelled]
        if not rows:
            return True
        ids = rows[0].ids
        chunk = torch.tensor([ids[fill.offset:fill.offset + self.prefill_chunk]], dtype=torch.long)
        # Positions follow from the cache's length: the prompt's own, unpadded.
        logits, fill.cache = self.model.forward(chunk, None, None, fill.cache, [rows[0].adapter])
        fill.offset += chunk.shape[1]
        if fill.offset < len(ids):
            return False
        going = []
        for row in rows:
            token = self._advance(row, logits[0].clone())
            if token is not None:
                going.append((row, token))
        if going:
            if len(going) > 1:
                fill.cache.batch_repeat_interleave(len(going))
            self._join([r for r, _ in going], fill.cache, len(ids), [t for _, t in going])
        return True

    def _join(self, rows: list[Row], cache: Any, width: int, tokens: list[int]) -> None:
        """Add rows whose caches are `width` wide (no padding) to the batch, left-padding the narrower side."""
        import torch

        mask = torch.ones((len(rows), width), dtype=torch.long)
        pos = torch.full((len(rows),), width, dtype=torch.long)
        nxt = torch.tensor(tokens, dtype=torch.long)
        if self._rows:
            have = int(self._mask.shape[1])
            if width < have:
                _pad_left(cache, have - width)
                mask = torch.nn.functional.pad(mask, (have - width, 0))
            elif have < width:
                _pad_left(self._cache, width - have)
                self._mask = torch.nn.functional.pad(self._mask, (width - have, 0))
            for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([mine.keys, theirs.keys])
                mine.values = torch.cat([mine.values, theirs.values])
            mask = torch.cat([self._mask, mask])
            pos = torch.cat([self._pos, pos])
            nxt = torch.cat([self._next, nxt])
            cache = self._cache
        self._rows = self._rows + rows
        self._cache, self._mask, self._pos, self._next = cache, mask, pos, nxt

    def _step(self) -> None:
        """One decode step for every row of the batch; rows that end leave it."""
        import torch

        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=-1)
        # No padding: no mask, as generate runs a lone prompt (so a lone row's logits are generate's).
        logits, self._cache = self.model.forward(
            self._next[:, None], None if bool(mask.all()) else mask, self._pos[:, None], self._cache,
            [r.adapter for r in self._rows])
        self._mask, self._pos = mask, self._pos + 1
        for j, row in enumerate(self._rows):
            token = None if row.cancelled else self._advance(row, logits[j])
            if token is not None:
                self._next[j] = token
        self._drop(lambda r: r.cancelled or r.done)

    def _drop(self, gone: Callable[[Row], bool]) -> None:
        """Remove rows from the batch (their cache rows too), then columns that are padding in every row."""
        import torch

        keep = [j for j, r in enumerate(self._rows) if not gone(r)]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._cache.batch_select_indices(index)
        self._mask, self._pos, self._next = self._mask[index], self._pos[index], self._next[index]
        self._rows = [self._rows[j] for j in keep]
        first = int(self._mask.any(dim=0).to(torch.int8).argmax())  # the first column some row uses
        if first:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            self._mask = self._mask[:, first:]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._pos, self._next = [], None, None, None, None


def stop_at(text: str, stop: Sequence[str]) -> int:
    """Where the first stop string found in `text` begins (the earliest of them), or -1 for none."""
    return min((text.find(s) for s in stop if s in text), default=-1)


def _pad_left(cache: Any, by: int) -> None:
    import torch

    for layer in cache.layers:
        layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, by, 0))
        layer.values = torch.nn.functional.pad(layer.values, (0, 0, by, 0))
