"""The ``/static`` mount and the pages' references to it: gzip when the browser accepts it, and URLs a browser
may keep for a year.

Versioned URLs: every page the server sends has its ``src="/static/…"`` and ``href="/static/…"`` rewritten to
``/static/v/<version>/…``, where ``<version>`` is a content hash of the whole ``static/`` tree (``AssetVersion``).
Those are served with ``Cache-Control: public, max-age=31536000, immutable``: a deploy that changes any file
changes every versioned URL, so a browser never keeps an old file under a new page. One hash for the tree, not one
per file, because the scripts are ES modules importing each other by relative paths (``./api.js``,
``../vendor/…``): a module under ``/static/v/<version>/js/`` finds its imports under the same version. A request
for a version that is not the current one (a page loaded before a deploy) is still answered, with the current
file and ``no-cache``.

Unversioned URLs keep working: vendored libraries and the geography (``vendor/``, ``geo/``) for a week, the
project's own scripts and styles revalidated (``no-cache``: ETag, ``304 Not Modified``). The pages themselves are
never cached (``no-cache``), so a deploy is seen at the next page load.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

LONG_LIVED = ("vendor/", "geo/")
WEEK = "public, max-age=604800"
YEAR = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
VERSIONED = "v/"  # /static/v/<version>/<path>
_REFERENCE = re.compile(r'(\s(?:src|href)=")/static/(?!v/)')


class AssetVersion:
    """A content hash of every file under ``directory``: read again only when a file's name, size or
    modification time changed since (a stat of each file per call: the tree is small)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: tuple[tuple[str, int, int], ...] = ()
        self._version = ""

    def current(self) -> str:
        files = sorted(p for p in self.directory.rglob("*") if p.is_file())
        seen = tuple(
            (p.relative_to(self.directory).as_posix(), (st := p.stat()).st_size, st.st_mtime_ns)
            for p in files
        )
        if seen != self._seen or not self._version:
            digest = hashlib.sha256()
            for path, (name, _, _) in zip(files, seen, strict=True):
                digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
            self._version, self._seen = digest.hexdigest()[:16], seen
        return self._version


_versions: dict[Path, AssetVersion] = {}


def asset_version(directory: Path) -> AssetVersion:
    """The one ``AssetVersion`` of ``directory`` in this process (shared by the pages and the mount)."""
    key = directory.resolve()
    found = _versions.get(key)
    if found is None:
        found = _versions[key] = AssetVersion(key)
    return found


def versioned_page(html: str, version: str) -> str:
    """``html`` with its ``src``/``href`` references to ``/static/…`` under ``/static/v/<version>/…``."""
    return _REFERENCE.sub(rf"\1/static/{VERSIONED}{version}/", html)


class CachedStaticFiles(StaticFiles):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.root = directory.resolve()
        self.version = asset_version(directory)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not path.startswith(VERSIONED):
            return await super().get_response(path, scope)
        _, version, rest = (path.split("/", 2) + ["", ""])[:3]
        response = await super().get_response(rest or ".", scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = YEAR if version == self.version.current() else REVALIDATE
        return response

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
