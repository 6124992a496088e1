"""The words of the scene world: colours, shapes, sizes, places and relations, with the synonyms we train on
and the ones we keep back to test phrasings the model never saw."""

from __future__ import annotations

# canonical colour -> (RGB, synonyms used in training, synonyms held out of training)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...], tuple[str, ...]]] = {
    "red": ((215, 35, 35), ("red", "scarlet"), ("crimson",)),
    "orange": ((245, 140, 25), ("orange",), ("tangerine",)),
    "yellow": ((245, 215, 35), ("yellow", "golden"), ("lemon yellow",)),
    "green": ((40, 165, 65), ("green", "grass green"), ("emerald",)),
    "blue": ((35, 85, 220), ("blue", "cobalt"), ("azure",)),
    "purple": ((135, 55, 185), ("purple", "violet"), ("amethyst",)),
    "pink": ((245, 125, 185), ("pink",), ("rose pink",)),
    "white": ((248, 248, 248), ("white",), ("snow white",)),
    "black": ((25, 25, 25), ("black",), ("jet black",)),
    "brown": ((125, 75, 35), ("brown",), ("chocolate brown",)),
    "gray": ((128, 128, 128), ("gray", "grey"), ("silver",)),
}
COLOUR_NAMES = tuple(COLOURS)

# canonical shape -> (training synonyms, held-out synonyms); the order is the classifier's class order.
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "circle": (("circle", "ball", "dot"), ("disc",)),
    "square": (("square", "box"), ("block",)),
    "triangle": (("triangle",), ("pyramid",)),
    "star": (("star",), ("five-pointed star",)),
    "diamond": (("diamond", "rhombus"), ("lozenge",)),
    "cross": (("cross", "plus sign"), ("plus",)),
}
SHAPE_NAMES = tuple(SHAPES)

# size word -> radius as a fraction of the image side
SIZES: dict[str, tuple[float, float]] = {"small": (0.09, 0.11), "": (0.14, 0.19), "large": (0.23, 0.27)}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "": ("",), "large": ("large", "big")}

# 3x3 grid cell (col, row) -> phrases; coordinates are the cell centres
CELL_CENTRES = (0.24, 0.5, 0.76)
CELLS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 1): ("on the left", "on the left side", "at the left"),
    (2, 1): ("on the right", "on the right side", "at the right"),
    (1, 0): ("at the top", "near the top", "at the top of the picture"),
    (1, 2): ("at the bottom", "near the bottom", "at the bottom of the picture"),
    (1, 1): ("in the center", "in the middle", "in the centre"),
    (0, 0): ("in the top left corner", "in the upper left", "at the top left"),
    (2, 0): ("in the top right corner", "in the upper right", "at the top right"),
    (0, 2): ("in the bottom left corner", "in the lower left", "at the bottom left"),
    (2, 2): ("in the bottom right corner", "in the lower right", "at the bottom right"),
}

# relation of the first object to the second -> phrases; axis 0 is x, 1 is y; sign of (first - second)
RELATIONS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "above": (("above", "over"), 1, -1),
    "below": (("below", "under", "beneath"), 1, 1),
    "left of": (("to the left of", "left of"), 0, -1),
    "right of": (("to the right of", "right of"), 0, 1),
}

BACKGROUND_PHRASES = ("on {} background", "against {} background", "with {} background")
PREFIXES = ("", "", "", "a picture of ", "an image of ", "a drawing of ")
DEFAULT_BACKGROUND = (252, 252, 252)

# dall-e-3's style words, appended by the images service as ", <words>": the model sees them in training so
# that they do not move the picture.
STYLE_SUFFIXES = ("vivid, dramatic, hyper-real, richly detailed", "natural, realistic, understated")
