"""The review page as one self-contained HTML file: the template, style and script shipped in
``runs/report_page/`` with the page's JSON document inline.

Safety of the inline data: the JSON is written with every ``<``, ``>`` and ``&`` as a ``\\u`` escape
(and all non-ASCII escaped), so no text from a run (a class named ``</script>``, a file name with
markup) can end the data block or start markup; the script puts every such text on the page with
``textContent``. The page's Content-Security-Policy allows only its own script (by its SHA-256) and
no network connection, so even a mistake there could not run injected code or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

ASSETS = "report_page"
"""Folder of the template, style sheet and script, beside this module."""
_PLACEHOLDER_RE = re.compile(r"\{\{([A-Z_]+)\}\}")


def json_for_script(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``: strict JSON, ASCII
    only, with ``<``, ``>`` and ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def script_hash(script: str) -> str:
    """The CSP source (``sha256-...``) that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def render_page(data: dict[str, Any], *, title: str) -> str:
    """The HTML of the page showing ``data`` (:func:`scclip_cli.runs.report.page_data`)."""
    template, css, script = _assets()
    values = {
        "TITLE": html.escape(title),
        "CSS": css,
        "SCRIPT": script,
        "SCRIPT_HASH": script_hash(script),
        "DATA": json_for_script(data),
    }
    # one pass: text put in is never searched for placeholders again
    return _PLACEHOLDER_RE.sub(lambda match: values[match[1]], template)


@cache
def _assets() -> tuple[str, str, str]:
    folder = resources.files("scclip_cli.runs").joinpath(ASSETS)
    return tuple(  # type: ignore[return-value]
        folder.joinpath(name).read_text(encoding="utf-8")
        for name in ("page.html", "page.css", "page.js")
    )
