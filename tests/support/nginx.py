"""Tests use the same real nginx launcher as the benchmarks and ``make cluster`` (``loadtest.nginx``)."""

from __future__ import annotations

from loadtest.nginx import Nginx, nginx_binary

__all__ = ["Nginx", "nginx_binary"]
