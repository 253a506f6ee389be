"""The dashboard's files, served by the admin endpoint under ``/dashboard``.

Rules this module keeps:

* Everything the page needs ships inside the package (``assets/``): the
  page, its script and style, and uPlot (MIT, vendored: ``UPLOT-LICENSE``)
  for the charts.  No CDN, no external request: the page works offline.
* The page inserts data with ``textContent`` only, and the content security
  policy (``CSP``) allows scripts and styles from the admin origin alone, no
  inline script.
* The files are read once, at import: a worker serves them from memory.
"""

from __future__ import annotations

from importlib import resources

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_FILES = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard/uplot.iife.min.js": ("uplot.iife.min.js", "text/javascript; charset=utf-8"),
    "/dashboard/uplot.min.css": ("uplot.min.css", "text/css; charset=utf-8"),
}


def _load() -> dict[str, tuple[str, bytes]]:
    folder = resources.files(__package__).joinpath("assets")
    return {path: (content_type, folder.joinpath(name).read_bytes()) for path, (name, content_type) in _FILES.items()}


#: URL path -> (content type, bytes).
ASSETS = _load()
