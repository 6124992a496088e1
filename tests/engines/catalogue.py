"""A retrieval task a general embedding model cannot do: a shop's staff name products by internal codenames
(arbitrary words, assigned at random), so a query names the codename and the document describes the product.
Used by the default model's fine-tuning test, the benchmark and the docs' worked example."""

from __future__ import annotations

import random

CODENAMES = ("Kestrel", "Bramble", "Quillon", "Marlow", "Tamsin", "Fennick", "Ortolan", "Brisket", "Calloway",
             "Drummond", "Esker", "Gannet", "Halyard", "Inglenook", "Jessamy", "Kittiwake", "Lanyard", "Mizzen",
             "Nuthatch", "Oriel", "Pippin", "Quoin", "Ruddock", "Sorrel", "Tillage", "Umber", "Vellum", "Whimbrel",
             "Yarrow", "Zephyrine")
PRODUCTS = ("wireless noise-cancelling headphones", "a stainless steel chef's knife", "a 4-person dome tent",
            "an espresso machine with a milk frother", "a cordless drill with two batteries",
            "a memory foam pillow", "a waterproof hiking jacket", "a 27-inch 4K computer monitor",
            "a cast iron frying pan", "an electric toothbrush", "a yoga mat with carrying strap",
            "a robot vacuum cleaner", "a mechanical keyboard with brown switches", "a baby car seat",
            "a smart thermostat", "a set of acrylic paints", "a carbon road bike helmet", "an air fryer",
            "a ceramic teapot", "a pair of trail running shoes", "a portable bluetooth speaker",
            "a down sleeping bag", "a standing desk with an electric motor", "a digital kitchen scale",
            "a leather office chair", "a kids' microscope kit", "a garden hose reel", "a hardshell suitcase",
            "a wool winter scarf", "an instant film camera")
TRAIN_TEMPLATES = ("{c}", "specs for {c}", "is {c} in stock", "how much does {c} cost", "ship {c} to Berlin",
                   "{c} warranty")
HELD_OUT_TEMPLATES = ("reviews of {c}", "{c} user manual", "compare {c} with similar products")


def catalogue(seed: int = 0) -> list[tuple[str, str]]:
    """(codename, product description), the codenames assigned to products at random."""
    products = list(PRODUCTS)
    random.Random(seed).shuffle(products)
    return list(zip(CODENAMES, products, strict=True))


def pairs(items: list[tuple[str, str]], templates: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"query": t.format(c=code), "positive": product} for code, product in items for t in templates]
