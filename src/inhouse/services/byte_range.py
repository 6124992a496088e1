"""A byte range of a content download (RFC 9110 §14): the one the client asked for, resolved against a size."""

from __future__ import annotations

from dataclasses import dataclass

from inhouse.errors import RangeNotSatisfiable


@dataclass(frozen=True)
class ByteRange:
    """`first`-`last` inclusive (last None: to the end), or the last `suffix` bytes (first None); `if_etag`:
    only for the content whose ETag that is (If-Range), else the whole content."""

    first: int | None
    last: int | None = None
    suffix: int | None = None
    if_etag: str | None = None

    def applies_to(self, etag: str) -> bool:
        """Whether the range applies to content with this strong ETag (a date in If-Range never matches: a
        stored object's time is its creation's, to the second, too coarse to prove the bytes the same)."""
        return self.if_etag is None or self.if_etag == etag

    def within(self, size: int) -> tuple[int, int]:
        """(offset, length) of the bytes this range names in content of `size` bytes, cut at its end. Raises
        RangeNotSatisfiable when it names none of them (a start at or past the end, an empty content, a zero
        suffix)."""
        if self.first is None:
            length = min(self.suffix or 0, size)
            if length == 0:
                raise RangeNotSatisfiable(f"The range asks for no byte of the {size} there are.", size=size)
            return size - length, length
        if self.first >= size:
            raise RangeNotSatisfiable(f"The range starts at byte {self.first}; there are {size}.", size=size)
        end = size - 1 if self.last is None else min(self.last, size - 1)
        return self.first, end - self.first + 1
