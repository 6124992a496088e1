"""One row's token choice, the seam both decode loops share (Hugging Face `generate` through a logits
processor, and the batched loop): penalties and logit_bias on the logits, temperature and top_p, the draw, and
constraints on the text (a JSON grammar, strings the output must not contain). A RowSampler knows nothing of the
loop that drives it: the loop hands it each step's logits (`choose`) and the token it took (`accept`).

Penalties follow OpenAI's formula on the logits of each step:
    logit[j] += bias[j] - count[j] * frequency_penalty - (count[j] > 0) * presence_penalty
where count[j] is how often token j was generated so far in this output (the prompt does not count); then
temperature and top_p as `generate` applies them (greedy takes the argmax).

A constrained row takes candidates in the order the choice would take them: greedy rows the next best logit,
sampled rows a fresh draw with every rejected token removed (a draw from the distribution restricted to the
tokens that keep the text valid). When top_p leaves no valid token, the draw falls back to the whole
temperature-scaled distribution, restricted the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inhouse.engines.causal.json_grammar import Grammar, State

if TYPE_CHECKING:
    import torch

    from inhouse.engines.causal.generation import SamplingParams

REJECTS_BEFORE_MASK = 8  # rejected candidates before every token whose first byte cannot come next is removed
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclass(frozen=True)
class Constraint:
    """What the output's text must keep to: a grammar (None: any text), and strings it must never contain."""

    grammar: Grammar | None = None
    forbid: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class TokenTable:
    """The bytes each token id adds to the decoded text. None: a special token (it adds no text when decoded
    with skip_special_tokens, and a grammar never takes it), or an id the tokenizer does not know."""

    pieces: list[bytes | None]
    first: Any  # torch long tensor [vocab]: each token's first byte, 256 for none


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE token spells each byte with."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def _decoder_types(tok: Any) -> set[str]:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return {str(p.get("type")) for p in parts if isinstance(p, dict)}


def token_table(tok: Any, vocab_size: int) -> TokenTable:
    """Each token's bytes, for byte-level BPE (GPT-2, SmolLM2, Llama 3...) and SentencePiece-style tokenizers
    (metaspace with byte fallback); other tokenizers through decoding each token alone."""
    import torch

    specials = set(tok.all_special_ids)
    added = {i: t for i, t in getattr(tok, "added_tokens_decoder", {}).items()}
    specials |= {i for i, t in added.items() if getattr(t, "special", False)}
    kinds = _decoder_types(tok)
    byte_level = "ByteLevel" in kinds
    reverse = _byte_decoder() if byte_level else {}
    pieces: list[bytes | None] = []
    names = tok.convert_ids_to_tokens(list(range(min(vocab_size, len(tok)))))
    for i in range(vocab_size):
        name = names[i] if i < len(names) else None
        if name is None or i in specials:
            pieces.append(None)
        elif i in added:
            pieces.append(str(added[i].content).encode())
        elif byte_level:
            try:
                pieces.append(bytes(reverse[c] for c in name))
            except KeyError:
                pieces.append(str(name).encode())
        elif "Metaspace" in kinds or "ByteFallback" in kinds or "▁" in name:
            match = _BYTE_TOKEN.match(name)
            pieces.append(bytes((int(match.group(1), 16),)) if match else name.replace("▁", " ").encode())
        else:
            text = tok.decode([i])
            pieces.append(None if "\ufffd" in text else text.encode())
    first = torch.tensor([p[0] if p else 256 for p in pieces], dtype=torch.long)
    return TokenTable(pieces, first)


class RowSampler:
    """The choice of one row's next token, step after step. Not thread-safe; one per row (or choice).

    `rng` None draws from torch's default generator (what `generate` seeds with torch.manual_seed); a batch
    gives each row its own. `table` is needed only by a constrained row (built on first use)."""

    def __init__(self, params: SamplingParams, vocab_size: int, rng: torch.Generator | None,
                 table: Callable[[], TokenTable] | None = None) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.params, self.rng = params, rng
        self.greedy = params.temperature <= 0
        # generate adds these two only when they change anything (top_k is 0 there: none).
        self.warpers: list[Any] = [] if self.greedy else [
            *([TemperatureLogitsWarper(params.temperature)] if params.temperature != 1.0 else []),
            *([TopPLogitsWarper(params.top_p)] if params.top_p < 1.0 else [])]
        self.penalized = bool(params.frequency_penalty or params.presence_penalty)
        self.counts = torch.zeros(vocab_size) if self.penalized else None
        self.bias: torch.Tensor | None = None
        if params.logit_bias:
            self.bias = torch.zeros(vocab_size)
            for token, value in params.logit_bias:
                self.bias[token] = value
        constraint = params.constraint
        self.grammar = constraint.grammar if constraint else None
        self.forbid = constraint.forbid if constraint else ()
        self.constrained = self.grammar is not None or bool(self.forbid)
        self.state: State | None = self.grammar.start if self.grammar else None
        self.tail = b""  # the output's last bytes, as many as a forbidden string could still need
        self._table = table
        self._checked: dict[int, tuple[bool, State | None]] = {}  # this step's candidates, checked
        self.stuck = False  # a step found no token that keeps the text valid

    @property
    def plain(self) -> bool:
        """Nothing beyond temperature and top_p: generate can sample this row itself."""
        return not (self.penalized or self.bias is not None or self.constrained)

    @property
    def finished(self) -> bool:
        """The grammar's text is whole: the row must end here."""
        return self.grammar is not None and self.state is not None and self.grammar.complete(self.state)

    @property
    def table(self) -> TokenTable:
        assert self._table is not None, "a constrained row needs the token table"
        return self._table()

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """Penalties and logit_bias on one step's logits (a new tensor when any applies)."""
        if self.counts is not None:
            p = self.params
            logits = logits - self.counts * p.frequency_penalty - (self.counts > 0).float() * p.presence_penalty
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def choose(self, logits: torch.Tensor) -> int | None:
        """The next token from one step's logits ([vocab], float32), or None when no token keeps the text
        valid (the row must end)."""
        import torch

        scores = self.adjust(logits)
        self._checked = {}
        if self.greedy:
            if not self.constrained:
                return int(scores.argmax())
            token = self._first_valid(scores.clone(), None)
            self.stuck = token is None
            return token
        warped = scores[None]
        for warp in self.warpers:
            warped = warp(None, warped)
        probs = torch.nn.functional.softmax(warped, dim=-1)[0]
        if not self.constrained:
            return int(torch.multinomial(probs[None], num_samples=1, generator=self.rng)[0, 0])
        token = self._first_valid(None, probs.clone())
        if token is None and self.warpers:  # top_p kept no valid token: the whole distribution, restricted
            tempered = scores / self.params.temperature
            token = self._first_valid(None, torch.nn.functional.softmax(tempered, dim=-1))
        self.stuck = token is None
        return token

    def _first_valid(self, scores: torch.Tensor | None, probs: torch.Tensor | None) -> int | None:
        """Candidates in the order the choice takes them (best logit, or a fresh draw), the first valid one."""
        import torch

        rejected = 0
        while True:
            if scores is not None:
                token = int(scores.argmax())
                if scores[token] == float("-inf"):
                    return None
            else:
                assert probs is not None
                if not bool(probs.sum() > 0):
                    return None
                token = int(torch.multinomial(probs[None], num_samples=1, generator=self.rng)[0, 0])
            if self._valid(token):
                return token
            rejected += 1
            if scores is not None:
                scores[token] = float("-inf")
            else:
                assert probs is not None
                probs[token] = 0.0
            if rejected == REJECTS_BEFORE_MASK:
                impossible = ~self._first_byte_mask()
                if scores is not None:
                    scores[impossible] = float("-inf")
                else:
                    assert probs is not None
                    probs[impossible] = 0.0

    def _first_byte_mask(self) -> torch.Tensor:
        """Tokens whose first byte may come next (a token without bytes: only when no grammar binds)."""
        import torch

        allowed = [True] * 256
        if self.grammar is not None:
            assert self.state is not None
            allowed = self.grammar.first_bytes(self.state)
        table = self.table
        return torch.tensor([*allowed, self.grammar is None])[table.first]

    def _valid(self, token: int) -> bool:
        if token not in self._checked:
            self._checked[token] = self._check(token)
        return self._checked[token][0]

    def _check(self, token: int) -> tuple[bool, State | None]:
        """Whether `token` keeps the text valid, and the grammar's state after it."""
        table = self.table
        piece = table.pieces[token] if token < len(table.pieces) else None
        state = self.state
        if self.grammar is not None:
            assert self.state is not None
            state = self.grammar.step(self.state, piece) if piece else None  # a grammar takes text only
            if state is None:
                return False, None
        if self.forbid and piece:
            window = self.tail + piece
            if any(f in window for f in self.forbid):
                return False, None
        return True, state

    def accept(self, token: int) -> None:
        """The row took `token` (its step is over)."""
        if self.counts is not None and token < self.counts.shape[0]:
            self.counts[token] += 1
        if not self.constrained:
            return
        piece = self.table.pieces[token] if token < len(self.table.pieces) else None
        if self.grammar is not None and self.state is not None:
            ok, state = self._checked.get(token) or self._check(token)
            self.state = state if ok else None  # a token the sampler did not choose may break the text
        if self.forbid and piece:
            keep = max(len(f) for f in self.forbid) - 1
            self.tail = (self.tail + piece)[-keep:] if keep else b""
        self._checked = {}


def hf_hooks(sampler: RowSampler, prompt_len: int, fallback: int) -> tuple[Any, Any]:
    """The sampler as a logits processor and a stopping criterion of Hugging Face `generate` (run greedy: the
    processor makes the choice, and hands generate scores where only the chosen token is finite). `fallback`
    is the token taken when no token keeps the text valid (an eos, so that generate ends there)."""
    import torch
    from transformers import LogitsProcessor, StoppingCriteria

    seen = [0]

    def sync(input_ids: torch.Tensor) -> None:
        for token in input_ids[0, prompt_len + seen[0] :].tolist():
            sampler.accept(int(token))
            seen[0] += 1

    class Choose(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            sync(input_ids)
            token = sampler.choose(scores[0].to(dtype=torch.float32))
            out = torch.full_like(scores, float("-inf"))
            out[0, fallback if token is None else token] = 0.0
            return out

    class Finished(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            sync(input_ids)
            return torch.full((input_ids.shape[0],), sampler.finished or sampler.stuck, dtype=torch.bool)

    return Choose(), Finished()


def row_generator(params: SamplingParams) -> torch.Generator | None:
    """A batch row's own generator: seeded with the row's seed as torch.manual_seed seeds generate's (a fresh
    random seed without one); None for a greedy row, which draws nothing."""
    import torch

    if params.temperature <= 0:
        return None
    gen = torch.Generator()
    if params.seed is None:
        gen.seed()
    elif -(2**63) <= params.seed < 2**64:
        gen.manual_seed(params.seed)  # as torch.manual_seed takes it in generate
    else:  # past what torch takes: folded in, rather than failing every row of the batch
        gen.manual_seed(params.seed % 2**64)
    return gen
