"""Layout planning for relation prompts: "A above B" becomes "A at the top" and "B at the bottom", one object
per half of the canvas, for models that draw one placed object reliably but not a spatial relation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# relation phrase -> (axis: 0 = x / 1 = y, whether the first-named object takes the low side: left or top).
# Longer phrases first, so that the alternation built from them tries "to the left of" before "left of".
_RELATIONS: dict[str, tuple[int, bool]] = {
    "to the left of": (0, True), "on the left of": (0, True), "left of": (0, True),
    "to the right of": (0, False), "on the right of": (0, False), "right of": (0, False),
    "on top of": (1, True), "above": (1, True), "over": (1, True),
    "underneath": (1, False), "beneath": (1, False), "below": (1, False), "under": (1, False),
}
# the place phrases of the scenes model's captions: (low side, high side) per axis
PLACES = {0: ("on the left", "on the right"), 1: ("at the top", "at the bottom")}
_RELATION = re.compile(r"\b(" + "|".join(re.escape(p) for p in _RELATIONS) + r")\b", re.IGNORECASE)
_BACKGROUND = re.compile(r"\s*\b(?:on|against|with)\s+an?\s+[\w -]{1,40}?\s+background\b", re.IGNORECASE)
# the share of the axis the seam between the halves is blended over (4 latent pixels at 128 px)
SEAM = 0.125


@dataclass(frozen=True)
class Layout:
    first: str  # prompt for the first-named object, in its half
    second: str
    axis: int
    first_low: bool  # the first object goes left (axis 0) or up (axis 1)


def plan(prompt: str) -> Layout | None:
    """None when the prompt does not name two things in one of the known relations."""
    head, comma, style = prompt.partition(",")
    background = ""
    bg = _BACKGROUND.search(head)
    if bg is not None:  # both halves must agree on the background
        background = " " + bg.group(0).strip()
        head = head[:bg.start()] + head[bg.end():]
    found = _RELATION.search(head)
    if found is None:
        return None
    first, second = head[:found.start()].strip(), head[found.end():].strip()
    if not re.search(r"\w", first) or not re.search(r"\w", second):
        return None
    axis, first_low = _RELATIONS[found.group(1).lower()]
    low, high = PLACES[axis]
    tail = background + (comma + style if comma else "")
    return Layout(f"{first} {low if first_low else high}{tail}", f"{second} {high if first_low else low}{tail}",
                  axis, first_low)


def first_weight(layout: Layout, height: int, width: int) -> Any:
    """A (1, 1, height, width) tensor: 1 where the first object's picture is kept, 0 where the second's,
    a linear blend across a narrow seam in the middle."""
    import torch

    size = (width, height)[layout.axis]
    centre = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ramp = ((0.5 + SEAM / 2 - centre) / SEAM).clamp(0, 1)  # 1 on the low side
    if not layout.first_low:
        ramp = 1 - ramp
    return ramp.view(1, 1, 1, size) if layout.axis == 0 else ramp.view(1, 1, size, 1)
