"""JSON as a pushdown automaton over bytes, for constrained decoding: can this byte string still grow into a JSON
object (any object, or one that matches a JSON schema in OpenAI's strict subset), and is it one already?

A state is a set of stacks of frames (a nondeterministic automaton: `anyOf`, numbers and literals that may end
or go on). Frames are tuples, so states are hashable and stepping never mutates: a candidate token is checked by
stepping a copy. Frames, top of a stack last:

    ("V", node, ws)                    a value of `node` is next (after `ws` whitespace bytes)
    ("O", node, st, key, seen, ws)     inside an object; st: 0 after "{", 1 in a key, 2 after a key,
                                       3 after a value, 4 after ","; key: the key's bytes so far (schema
                                       objects) or its string state (free objects); seen: keys done
    ("A", items, st, ws)               inside an array; st: 0 after "[", 1 after a value, 2 after ","
    ("S", esc, utf8)                   inside a string (escape state, UTF-8 continuation bytes still due)
    ("N", integer, st, length)         inside a number (st: a state of JSON's number grammar)
    ("L", options, pos)                a literal: `pos` bytes read of one of `options` (true, an enum value...)
    ("J", inner, esc)                  inside a string that encodes JSON: `inner` is the state of an automaton
                                       fed the string's unescaped content (esc: 1 after a backslash)
    ("E",)                             the end: nothing may follow

Invariants: a frame pushed for a value replaces its parent by the parent's state *after* that value, so a
value that ends just pops. Every state reached can still be completed (no dead ends: a constrained row always
has a next byte). Numbers and literals end only when a byte they cannot take arrives (it is then fed to
the frame below) or at the end of the output (`complete`). Whitespace runs are capped (max_ws) so that a model
cannot spend its whole budget on blanks between two tokens of structure."""

from __future__ import annotations

from typing import Any

from inhouse.engines.causal.json_schema import (
    ANY,
    ANY_TYPES,
    FREE_OBJECT,
    AnyValue,
    ArrayNode,
    EncodedNode,
    LiteralNode,
    Node,
    NumberNode,
    ObjectNode,
    StringNode,
    UnionNode,
    deref,
)

MAX_WS = 20  # whitespace bytes in a row between two tokens of structure (llama.cpp's JSON grammar allows 20)
MAX_NUMBER = 40  # bytes of one number
MAX_NESTING = 64  # frames on a stack: objects and arrays nest about as deep

WS = frozenset(b" \t\n\r")
DIGITS = frozenset(b"0123456789")
HEX = frozenset(b"0123456789abcdefABCDEF")
SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')


Frame = tuple[Any, ...]
Stack = tuple[Frame, ...]
State = frozenset[Stack]


# UTF-8 lead bytes: the continuation bytes due, and the range the first of them must fall in (no overlong
# forms, no surrogates, nothing past U+10FFFF); later continuation bytes are 80..BF.
_LEADS: dict[int, tuple[int, int, int]] = {
    **{b: (1, 0x80, 0xBF) for b in range(0xC2, 0xE0)}, 0xE0: (2, 0xA0, 0xBF),
    **{b: (2, 0x80, 0xBF) for b in (*range(0xE1, 0xED), 0xEE, 0xEF)}, 0xED: (2, 0x80, 0x9F),
    0xF0: (3, 0x90, 0xBF), 0xF1: (3, 0x80, 0xBF), 0xF2: (3, 0x80, 0xBF), 0xF3: (3, 0x80, 0xBF),
    0xF4: (3, 0x80, 0x8F)}


def _string_step(esc: int, utf8: Any, b: int) -> tuple[int, Any] | bool | None:
    """One byte inside a JSON string: the next (escape, utf8) state, True at the closing quote, None if the
    byte cannot be there. esc: 0 plain, 1 after a backslash, 2..5 hex digits of a \\u escape still due (-1);
    utf8: 0, or (continuation bytes due, lowest, highest value of the next one)."""
    if utf8:
        due, lo, hi = utf8
        if not lo <= b <= hi:
            return None
        return (0, (due - 1, 0x80, 0xBF) if due > 1 else 0)
    if esc == 1:
        if b in SIMPLE_ESCAPES:
            return (0, 0)
        return (5, 0) if b == ord("u") else None
    if esc >= 2:
        if b not in HEX:
            return None
        return (0 if esc == 2 else esc - 1, 0)
    if b == ord('"'):
        return True
    if b == ord("\\"):
        return (1, 0)
    if b < 0x20:
        return None
    if b < 0x80:
        return (0, 0)
    lead = _LEADS.get(b)
    return None if lead is None else (0, lead)


# The number grammar: M after "-", Z after a leading 0, I integer digits, D after ".", F fraction digits,
# E after an exponent mark, S after its sign, X exponent digits. Z, I, F and X may end.
_NUMBER_ENDS = frozenset("ZIFX")


def _number_step(st: str, integer: bool, b: int) -> str | None:
    digit = b in DIGITS
    if st == "M":
        return ("Z" if b == ord("0") else "I") if digit else None
    if st in "ZI":
        if st == "I" and digit:
            return "I"
        if integer:
            return None
        return "D" if b == ord(".") else "E" if b in b"eE" else None
    if st in "DF":
        if digit:
            return "F"
        return "E" if st == "F" and b in b"eE" else None
    if st == "E":
        return "S" if b in b"+-" else "X" if digit else None
    return "X" if digit else None  # S, X


def _start(node: Node, b: int, out: list[Frame]) -> None:
    """The frames a value of `node` starts with, once its first byte `b` is read."""
    node = deref(node)
    if isinstance(node, UnionNode):
        for option in node.options:
            _start(option, b, out)
    elif isinstance(node, AnyValue):
        for typed in ANY_TYPES:
            _start(typed, b, out)
    elif isinstance(node, ObjectNode):
        if b == ord("{"):
            out.append(("O", node, 0, None, frozenset(), 0))
    elif isinstance(node, ArrayNode):
        if b == ord("["):
            out.append(("A", node.items, 0, 0))
    elif isinstance(node, StringNode):
        if b == ord('"'):
            out.append(("S", 0, 0))
    elif isinstance(node, EncodedNode):
        if b == ord('"'):
            out.append(("J", frozenset({(("E",), ("V", node.inner, 0))}), 0))
    elif isinstance(node, NumberNode):
        if b == ord("-"):
            out.append(("N", node.integer, "M", 1))
        elif b in DIGITS:
            out.append(("N", node.integer, "Z" if b == ord("0") else "I", 1))
    elif isinstance(node, LiteralNode):
        options = tuple(o for o in node.options if o[0] == b)
        if options:
            out.append(("L", options, 1))


def _can_end(frame: Frame) -> bool:
    kind = frame[0]
    if kind == "N":
        return bool(frame[2] in _NUMBER_ENDS)
    if kind == "L":
        return any(len(o) == frame[2] for o in frame[1])
    return False


def _step(stack: Stack, b: int, out: set[Stack], cap: int) -> None:
    """Every stack `stack` becomes after byte `b`, added to `out` (`cap`: whitespace bytes allowed in a row)."""
    if not stack:
        return
    top, rest = stack[-1], stack[:-1]
    kind = top[0]
    if _can_end(top):  # the number or literal ends here: the byte is its parent's
        _step(rest, b, out, cap)
    if kind == "V":
        _, node, ws = top
        if b in WS:
            if ws < cap:
                out.add((*rest, ("V", node, ws + 1)))
            return
        started: list[Frame] = []
        _start(node, b, started)
        if len(stack) >= MAX_NESTING:  # deep enough: scalars only (each step copies the stack)
            started = [f for f in started if f[0] not in "OA"]
        out.update((*rest, f) for f in started)
    elif kind == "O":
        _object_step(top, rest, b, out, cap)
    elif kind == "A":
        _, items, st, ws = top
        if b in WS:
            if ws < cap:
                out.add((*rest, ("A", items, st, ws + 1)))
        elif st in (0, 1) and b == ord("]"):
            out.add(rest)
        elif st == 1:
            if b == ord(","):
                out.add((*rest, ("A", items, 2, 0)))
        else:  # a value starts here: the array waits after it
            _step((*rest, ("A", items, 1, 0), ("V", items, 0)), b, out, cap)
    elif kind == "S":
        nxt = _string_step(top[1], top[2], b)
        if nxt is True:
            out.add(rest)
        elif isinstance(nxt, tuple):
            out.add((*rest, ("S", *nxt)))
    elif kind == "N":
        _, integer, st, length = top
        nst = _number_step(st, integer, b)
        # Within MAX_NUMBER bytes, and a state that cannot end leaves room for the digit that ends it.
        if nst is not None and length + (1 if nst in _NUMBER_ENDS else 2) <= MAX_NUMBER:
            out.add((*rest, ("N", integer, nst, length + 1)))
    elif kind == "L":
        _, options, pos = top
        kept = tuple(o for o in options if len(o) > pos and o[pos] == b)
        if kept:
            out.add((*rest, ("L", kept, pos + 1)))
    elif kind == "J":
        _encoded_step(top, rest, b, out, cap)


_UNESCAPE = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("n"): b"\n", ord("t"): b"\t", ord("r"): b"\r"}


def _encoded_step(top: Frame, rest: Stack, b: int, out: set[Stack], cap: int) -> None:
    """A string that encodes JSON. Its escapes are those the inner text can need (quotes, backslashes,
    whitespace between tokens); \\u escapes are not taken (non-ASCII text goes in as UTF-8), so every
    escape begun can be finished (the automaton never reads a prefix it cannot complete)."""
    _, inner, esc = top
    data: bytes | None = None
    if esc == 0:
        if b == ord('"'):
            if _complete(inner):
                out.add(rest)
            return
        if b == ord("\\"):
            if any(_advance(inner, x, cap) is not None for x in _UNESCAPE.values()):
                out.add((*rest, ("J", inner, 1)))
            return
        if b < 0x20:
            return
        data = bytes((b,))  # UTF-8 passes through: the inner automaton checks it inside its strings
    else:
        data = _UNESCAPE.get(b)
    if data is not None:
        fed = _advance(inner, data, cap)
        if fed is not None:
            out.add((*rest, ("J", fed, 0)))


def _advance(state: State, data: bytes, cap: int) -> State | None:
    for b in data:
        out: set[Stack] = set()
        for stack in state:
            _step(stack, b, out, cap)
        if not out:
            return None
        state = frozenset(out)
    return state


def _complete(state: State) -> bool:
    for stack in state:
        i = len(stack) - 1
        while i > 0 and _can_end(stack[i]):
            i -= 1
        if i == 0:  # only the end frame is left
            return True
    return False


def _keys_left(node: ObjectNode, seen: frozenset[bytes]) -> list[bytes]:
    return [k for k in node.props if k not in seen]


def _object_step(top: Frame, rest: Stack, b: int, out: set[Stack], cap: int) -> None:
    _, node, st, key, seen, ws = top
    if st == 1:  # in a key
        if node.free:
            nxt = _string_step(key[0], key[1], b)
            if nxt is True:
                out.add((*rest, ("O", node, 2, None, seen, 0)))
            elif isinstance(nxt, tuple):
                out.add((*rest, ("O", node, 1, nxt, seen, 0)))
            return
        left = _keys_left(node, seen)
        if b == ord('"') and key in left:
            out.add((*rest, ("O", node, 2, key, seen, 0)))
        grown = key + bytes((b,))
        if any(k.startswith(grown) for k in left):
            out.add((*rest, ("O", node, 1, grown, seen, 0)))
        return
    if b in WS:
        if ws < cap:
            out.add((*rest, ("O", node, st, key, seen, ws + 1)))
        return
    closes = node.free or node.required <= seen
    if st in (0, 4) and b == ord('"'):
        if node.free or _keys_left(node, seen):
            out.add((*rest, ("O", node, 1, (0, 0) if node.free else b"", seen, 0)))
    elif st in (0, 3) and b == ord("}"):
        if closes:
            out.add(rest)
    elif st == 2 and b == ord(":"):
        value = ANY if node.free else node.props[key]
        done = seen if node.free else seen | {key}
        out.add((*rest, ("O", node, 3, None, done, 0), ("V", value, 0)))
    elif st == 3 and b == ord(",") and (node.free or _keys_left(node, seen)):
        out.add((*rest, ("O", node, 4, None, seen, 0)))


class Grammar:
    """What the output must be: `prefix` bytes, then a JSON value of `root` (an object), then `suffix` bytes,
    with at most `max_ws` whitespace bytes in a row. Immutable; states are plain values, so one Grammar
    serves every row that uses it."""

    def __init__(self, root: Node = FREE_OBJECT, prefix: bytes = b"", suffix: bytes = b"",
                 max_ws: int = MAX_WS) -> None:
        self.root, self.prefix, self.suffix, self.max_ws = root, prefix, suffix, max_ws
        stack: Stack = (("E",),)
        if suffix:
            stack += (("L", (suffix,), 0),)
        stack += (("V", root, max_ws),)  # at the cap: the text starts with the value itself
        if prefix:
            stack += (("L", (prefix,), 0),)
        self.start: State = frozenset({stack})

    def step(self, state: State, data: bytes) -> State | None:
        """The state after `data`, or None when no JSON text of this grammar starts with what was read."""
        return _advance(state, data, self.max_ws)

    def complete(self, state: State) -> bool:
        """Whether what was read is a whole text of the grammar (nothing more may follow but the end)."""
        return _complete(state)

    def accepts(self, data: bytes) -> bool:
        state = self.step(self.start, data)
        return state is not None and self.complete(state)

    def first_bytes(self, state: State) -> list[bool]:
        """For each byte value, whether it may come next."""
        return [self.step(state, bytes((b,))) is not None for b in range(256)]
