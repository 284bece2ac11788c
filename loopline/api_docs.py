"""Swagger UI for a FastAPI app from files installed with the project, so `/docs` works offline.

FastAPI's default `/docs` page loads Swagger UI's script and stylesheet from a CDN: blank
without internet. `offline_docs(app)` serves the same page with the files of the
`swagger-ui-bundle-v2` package (Swagger UI 5, which renders the OpenAPI 3.1 FastAPI emits).
Create the app with ``docs_url=None, redoc_url=None`` first.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def offline_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url`, its files under ``/docs-assets``, nothing from a CDN."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url or '/openapi.json'}",
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            # no validator badge: it would ask validator.swagger.io about the spec
            swagger_ui_parameters={"validatorUrl": None},
        )
