"""Benchmarks: each module has ``main(argv) -> dict`` and prints one JSON line (``tandtid bench <name>``)."""
