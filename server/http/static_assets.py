"""The ``/static`` mount: files from ``static/``, gzip-compressed when the browser accepts it, cacheable.

Vendored libraries and the geography (``vendor/``, ``geo/``) change only when they are replaced by hand, so a browser
keeps them for a week. The project's own scripts and styles change with every deploy and are imported by plain
module paths, so a browser revalidates them (ETag, ``304 Not Modified``) instead of refetching them.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

LONG_LIVED = ("vendor/", "geo/")
WEEK = "public, max-age=604800"
REVALIDATE = "no-cache"


class CachedStaticFiles(StaticFiles):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.root = directory.resolve()

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        relative = Path(full_path).relative_to(self.root).as_posix()
        response.headers["Cache-Control"] = WEEK if relative.startswith(LONG_LIVED) else REVALIDATE
        return response


def static_app(directory: Path) -> ASGIApp:
    return GZipMiddleware(CachedStaticFiles(directory), minimum_size=500)
