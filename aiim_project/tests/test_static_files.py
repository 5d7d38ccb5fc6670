"""Static files in production mode: `collectstatic`, then a server with DEBUG=false (as the
Docker image runs it) serves content-hashed, compressed files with a long cache, and the
admin and docs render styled from them in Chromium."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.support.http import fetch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

YEAR_IMMUTABLE = "max-age=315360000, public, immutable"


def get(url: str, **headers: str):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read()


def test_whitenoise_runs_only_in_django_s_full_chain():
    """Static files are served by the chain for everything outside /api/aiim/; the REST API's
    one-hop handler and the WebSocket never run WhiteNoise (docs/browser.md, measured there)."""
    from django.conf import settings
    from django.utils.module_loading import import_string
    from whitenoise.middleware import WhiteNoiseMiddleware

    from aiim_project import asgi, wiring

    def static(paths):
        return [p for p in paths if issubclass(import_string(p), WhiteNoiseMiddleware)]

    assert static(settings.MIDDLEWARE) == ["aiim_project.static_files.StaticFilesMiddleware"]
    assert static(settings.API_MIDDLEWARE) == []
    handler = wiring.http_app_of(asgi.application).fast.app
    handler.load_middleware()
    chain, seen = handler._middleware_chain, []
    while chain is not None:  # convert_exception_to_response wrappers keep __wrapped__
        seen.append(type(getattr(chain, "__wrapped__", chain)).__name__)
        chain = getattr(getattr(chain, "__wrapped__", chain), "get_response", None)
    assert "StaticFilesMiddleware" not in seen and "SessionMiddleware" not in seen
    assert "RequestIdMiddleware" in seen  # the walk did reach the chain


def test_pages_reference_hashed_files_served_with_a_year_of_cache(prod_server):
    status, _, page = fetch("GET", f"{prod_server.url}/admin/login/")
    assert status == 200
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page).group(1)
    status, headers, body = get(prod_server.url + css)
    assert status == 200 and headers["Cache-Control"] == YEAR_IMMUTABLE
    assert headers["Content-Type"].startswith("text/css") and b"--header-bg" in body
    # Compressed when the browser accepts it.
    status, headers, gzipped = get(prod_server.url + css, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and len(gzipped) < len(body)


def test_docs_assets_come_from_the_collected_files(prod_server):
    _, _, page = fetch("GET", f"{prod_server.url}/docs")
    bundle = re.search(r'src="(/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.[0-9a-f]{12}\.js)"', page)
    assert bundle, page
    status, headers, _ = get(prod_server.url + bundle.group(1))
    assert status == 200 and headers["Cache-Control"] == YEAR_IMMUTABLE


def test_unhashed_names_get_a_short_cache_and_unknown_files_404(prod_server):
    status, headers, _ = get(f"{prod_server.url}/static/admin/css/base.css")
    assert status == 200 and headers["Cache-Control"] == "max-age=60, public"
    status, _, _ = fetch("GET", f"{prod_server.url}/static/admin/css/no-such-file.css")
    assert status == 404
    # Only what collectstatic wrote is served: nothing from the apps' source directories.
    assert (prod_server.static_root / "staticfiles.json").exists()


def test_the_admin_and_the_browsable_api_render_styled_in_production(tab, prod_server):
    tab.goto(f"{prod_server.url}/admin/login/")
    assert tab.style("#header", "backgroundColor") == "rgb(65, 118, 144)"
    assert tab.js("Array.from(document.styleSheets).every(s => s.cssRules.length > 0)")
    tab.goto(f"{prod_server.url}/api/aiim/conversations")
    assert tab.style(".navbar", "backgroundColor") == "rgb(44, 44, 44)"
    assert tab.js("!!document.querySelector('a[href^=\"/api-auth/login\"]')")
    tab.goto(f"{prod_server.url}/redoc")
    tab.wait_for("document.querySelectorAll('li[data-item-id]').length > 5")
    tab.assert_nothing_left_the_machine()


def test_a_missing_static_root_is_one_log_line_not_a_bare_warning(settings, tmp_path, caplog):
    import warnings

    from aiim_project.static_files import StaticFilesMiddleware

    settings.STATIC_ROOT = str(tmp_path / "never-collected")
    settings.WHITENOISE_AUTOREFRESH = False
    settings.WHITENOISE_USE_FINDERS = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StaticFilesMiddleware(lambda request: None)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name == "aiim.static"] == [
        f"No static files at {tmp_path / 'never-collected'}: run `manage.py collectstatic` (docs/browser.md)."
    ]
