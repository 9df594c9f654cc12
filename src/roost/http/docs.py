"""The API's interactive documentation (Swagger UI), served by Roost itself.

FastAPI's default ``/docs`` page loads Swagger UI's script and style from a CDN, so it breaks on
a network without internet — the normal case for a self-hosted platform. Here the same page
loads them from ``/docs/assets``, out of the ``swagger-ui-bundle`` package (a registry
dependency shipped with Roost), so the page works wherever the API does.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH: Final = "/docs"
ASSETS_PATH: Final = "/docs/assets"


def install(app: FastAPI, *, title: str) -> None:
    """Serve Swagger UI at ``/docs`` with its assets from Roost (the app has ``docs_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} — API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
