"""/docs works on a network without internet: Swagger UI's assets come from Roost itself."""

from __future__ import annotations

import re

from tests.support import Api, RoostServer


def test_the_docs_page_loads_its_assets_from_roost_not_a_cdn(server: RoostServer) -> None:
    with Api(server.url) as api:
        page = api.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources, page.text
        # Every script, style and icon the page loads is one of Roost's own paths.
        assert all(s.startswith("/docs/assets/") for s in sources), sources
        assert "cdn" not in page.text.lower() and "http" not in "".join(sources)
        assert "'/openapi.json'" in page.text
        for source, kind, marker in (
            ("/docs/assets/swagger-ui-bundle.js", "javascript", "SwaggerUIBundle"),
            ("/docs/assets/swagger-ui.css", "text/css", ".swagger-ui"),
        ):
            asset = api.get(source)
            assert asset.status_code == 200, source
            assert kind in asset.headers["content-type"], asset.headers
            assert marker in asset.text
        assert api.get("/docs/assets/favicon-32x32.png").status_code == 200
        assert api.get("/docs/assets/no-such-file.js").status_code == 404
