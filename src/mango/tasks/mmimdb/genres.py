"""MM-IMDb label set and published split sizes (Arevalo et al. 2017, see ``docs/data.md``).

Example:
    >>> len(GENRES), GENRES[:3], GENRES[-1]
    (23, ('Drama', 'Comedy', 'Romance'), 'Film-Noir')
    >>> canonical_split("val"), sum(SPLIT_SIZES.values())
    ('dev', 25959)
"""

from __future__ import annotations

from mango.errors import ConfigError

#: The 23 standard genres, in the column order of the HDF5 release (most frequent first).
GENRES: tuple[str, ...] = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)  # fmt: skip

#: The 4 rare genres of the raw json files that the standard protocol drops (27 raw labels).
EXTRA_RAW_GENRES: tuple[str, ...] = ("Adult", "Reality-TV", "Talk-Show", "News")

#: Published number of movies per split.
SPLIT_SIZES: dict[str, int] = {"train": 15552, "dev": 2608, "test": 7799}

#: Other accepted split names -> canonical split.
SPLIT_ALIASES: dict[str, str] = {"val": "dev", "validation": "dev"}


def canonical_split(split: str) -> str:
    """``train``/``dev``/``test`` for ``split`` (``val`` and ``validation`` mean ``dev``)."""
    canonical = SPLIT_ALIASES.get(split, split)
    if canonical not in SPLIT_SIZES:
        raise ConfigError(
            f"split: MM-IMDb has no split {split!r}; choose train, dev (or val), test"
        )
    return canonical
