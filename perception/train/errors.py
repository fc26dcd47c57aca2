"""The data readers' error, in a module of its own so that the torch-free readers
(:mod:`perception.train.labelled`, :mod:`perception.train.datasets`) and the torch data
sources (:mod:`perception.train.sources`) raise the same class."""

from __future__ import annotations


class DataError(ValueError):
    """A data source that cannot be built; names the card key or path."""
