"""Examples; a package so that ``class: examples.quickstart.jobs:...`` resolves from the
repository root even where another installed distribution ships an ``examples`` module."""
