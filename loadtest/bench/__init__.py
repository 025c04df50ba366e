"""Benchmarks: each module has ``main(argv) -> dict`` and prints one JSON line
(``python -m loadtest.bench <name>``; see ``__main__.py``)."""
