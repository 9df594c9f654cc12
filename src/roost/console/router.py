"""The console's own pages: sign in and out, the superuser's tenant switch, and static files.

The session is the user's login token in an ``HttpOnly``, ``SameSite=Strict`` cookie (see
:mod:`roost.http.session` for why a cookie rather than a token kept by the page's script).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from roost.console.web import NO_STORE, TEMPLATES, ConsoleRoute, PageDep, set_session_cookie
from roost.errors import RoostError
from roost.http import session

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def install(app: FastAPI, rooms: list[ModuleType]) -> None:
    """Serve the console at ``/``: its own pages, each room's pages, and ``/static``."""
    app.include_router(router)
    for room in rooms:
        TEMPLATES.add(room.__name__.rpartition(".")[0])
        app.include_router(room.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this server only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_form(request: Request, *, error: str | None = None, status: int = 200) -> HTMLResponse:
    body = TEMPLATES.env.get_template("console/login.html").render(
        page=None, error=error, next=_local(request.query_params.get("next"))
    )
    return HTMLResponse(body, status_code=status, headers=NO_STORE)


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The sign-in form."""
    return _login_form(request)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the user's name and password and start a session (a cookie)."""
    identity = request.app.state.roost.identity
    address = request.client.host if request.client else "unknown"
    if not username or not password:
        return _login_form(request, error="enter your username and password", status=422)
    try:
        result = await identity.login(username, password, address)
    except RoostError as exc:
        return _login_form(request, error=exc.detail, status=exc.status)
    response = RedirectResponse(_local(next), status_code=303)
    set_session_cookie(response, request, result.token)
    response.delete_cookie(session.TENANT_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(page: PageDep, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    """End the user's sessions (every token issued to them until now) and clear the cookie."""
    token = session.session_of(page.request) or ""
    session.check_csrf(page.roost.identity.secret_key, token, csrf)
    await page.roost.identity.logout(page.actor)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    response.delete_cookie(session.TENANT_COOKIE, path="/")
    return response


@router.post("/tenant")
async def switch_tenant(
    page: PageDep,
    tenant: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The superuser acts inside another tenant from now on (a cookie)."""
    token = session.session_of(page.request) or ""
    session.check_csrf(page.roost.identity.secret_key, token, csrf)
    page.actor.require_superuser()
    response = RedirectResponse("/", status_code=303)
    if tenant and tenant in page.tenants:
        response.set_cookie(
            session.TENANT_COOKIE,
            tenant,
            httponly=True,
            samesite="strict",
            secure=page.request.url.scheme == "https",
            path="/",
        )
    else:
        response.delete_cookie(session.TENANT_COOKIE, path="/")
    return response
