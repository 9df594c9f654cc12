"""The console's page machinery: the signed-in user of a page, templates, and HTML errors.

A room serves its console pages from ``<room>/console.py``: an ``APIRouter`` whose routes use
:class:`ConsoleRoute` and take :data:`PageDep`, with templates under ``<room>/templates/<room>/``.
Pages read through the same services as the API; every change a page offers is sent by the
browser to the API itself (``static/console.js``), so the console has no second copy of the rules
and shows the API's own error message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, RedirectResponse, Response

from roost import __version__
from roost.core.access import Actor, Role
from roost.errors import AuthenticationFailed, RoostError
from roost.http import session
from roost.store.queries import MAX_LIMIT, PageRequest

# Rows a console table shows by default: a screenful at 1280×800 without scrolling far.
DEFAULT_PAGE_SIZE = 50


class LoginRequired(Exception):
    """The page needs a signed-in user; the browser is sent to the sign-in page."""


@dataclass(slots=True)
class Templates:
    """The Jinja environment over the console's and every room's templates."""

    packages: list[str] = field(default_factory=lambda: ["roost.console"])
    _env: Environment | None = None

    def add(self, package: str) -> None:
        """Find templates in ``package``'s ``templates`` folder too."""
        if package not in self.packages:
            self.packages.append(package)
            self._env = None

    @property
    def env(self) -> Environment:
        """The environment (built once, after every room registered)."""
        if self._env is None:
            env = Environment(
                loader=ChoiceLoader([PackageLoader(pkg, "templates") for pkg in self.packages]),
                autoescape=select_autoescape(default=True),
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.filters.update(
                when=format_when, ago=format_ago, tojson_pretty=pretty_json, number=format_number
            )
            env.globals.update(version=__version__, urlencode=urlencode, quote=quote)
            self._env = env
        return self._env


TEMPLATES = Templates()


@dataclass(slots=True)
class Page:
    """One console page being answered: the request, the running Roost and who asks."""

    request: Request
    roost: Any  # the running Roost; each room's page types what it calls through its Services
    actor: Actor
    csrf: str
    tenants: list[str] = field(default_factory=list)
    # A fresh login token when the session passed half its life (sent back as the cookie).
    renewed: str | None = None

    @property
    def can_operate(self) -> bool:
        """Whether the user may change the fleet (operator or admin): write actions are shown."""
        return self.actor.role >= Role.OPERATOR

    @property
    def can_admin(self) -> bool:
        """Whether the user manages the tenant's users and keys."""
        return self.actor.role >= Role.ADMIN

    def paging(self, *, default_sort: str | None = None, size: int = DEFAULT_PAGE_SIZE) -> Paging:
        """Paging of a table from the query string (``page``, ``size``, ``sort``)."""
        return Paging.from_request(self.request, default_sort=default_sort, size=size)

    def render(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        """The template rendered with the page's user, role and CSRF token."""
        body = TEMPLATES.env.get_template(template).render(page=self, **context)
        response = HTMLResponse(body, status_code=status, headers=NO_STORE)
        if self.renewed is not None:
            set_session_cookie(response, self.request, self.renewed)
        return response


# Pages show live fleet data for one user: never cached or stored by the browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Paging:
    """A table's page from the query string, and the links to its neighbours."""

    request: Request
    number: int
    size: int
    sort: str | None

    @classmethod
    def from_request(
        cls, request: Request, *, default_sort: str | None, size: int = DEFAULT_PAGE_SIZE
    ) -> Paging:
        """Read ``page`` (from 1), ``size`` and ``sort``; bad values fall back to defaults."""
        number = _int(request.query_params.get("page"), 1, lo=1, hi=1_000_000)
        size = _int(request.query_params.get("size"), size, lo=1, hi=MAX_LIMIT)
        sort = request.query_params.get("sort") or default_sort
        return cls(request, number, size, sort)

    @property
    def request_page(self) -> PageRequest:
        """The services' paging request."""
        return PageRequest(limit=self.size, offset=(self.number - 1) * self.size, sort=self.sort)

    def pages(self, total: int) -> int:
        """How many pages ``total`` rows make."""
        return max(1, math.ceil(total / self.size))

    def link(self, **changes: Any) -> str:
        """This page's URL with query parameters changed (``None`` removes one)."""
        query = dict(self.request.query_params)
        for key, value in changes.items():
            if value is None or value == "":
                query.pop(key, None)
            else:
                query[key] = str(value)
        encoded = urlencode(query)
        return f"{self.request.url.path}?{encoded}" if encoded else self.request.url.path

    def sort_link(self, fieldname: str) -> str:
        """The link that sorts by ``fieldname``, descending when it is already ascending."""
        new = f"-{fieldname}" if self.sort == fieldname else fieldname
        return self.link(sort=new, page=None)


def _int(raw: str | None, default: int, *, lo: int, hi: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return min(max(value, lo), hi)


async def console_page(request: Request) -> Page:
    """The page's signed-in user from the session cookie (the sign-in page when there is none)."""
    roost = request.app.state.roost
    token = session.session_of(request)
    if token is None:
        raise LoginRequired
    try:
        actor = await roost.identity.authenticate(token)
    except AuthenticationFailed as exc:
        raise LoginRequired from exc
    renewed = roost.identity.renew(actor, token)
    tenant = request.cookies.get(session.TENANT_COOKIE)
    tenants: list[str] = []
    if actor.is_superuser:
        listed = await roost.identity.list_tenants(actor, PageRequest(limit=MAX_LIMIT))
        tenants = [row["id"] for row in listed.items]
        if tenant and tenant in tenants:
            actor = await roost.identity.act_in_tenant(actor, tenant)
    return Page(
        request=request,
        roost=roost,
        actor=actor,
        # The same for a renewed token (it names the user's session, not the token).
        csrf=session.csrf_token(roost.identity.secret_key, token),
        tenants=tenants,
        renewed=renewed[0] if renewed else None,
    )


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """Keep ``token`` as the browser's session: ``HttpOnly`` (no script reads it),
    ``SameSite=Strict`` (no other site's page sends it), ``Secure`` over HTTPS."""
    response.set_cookie(
        session.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


PageDep = Annotated[Page, Depends(console_page)]


class ConsoleRoute(APIRoute):
    """A console page: no login sends the browser to sign in; an error is an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            except RoostError as exc:
                return error_page(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(part) for part in first.get("loc", ())[1:])
                detail = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid input"
                return error_page(request, 422, "Invalid input", detail)

        return answer


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """An error as a console page (the sign-in state is not needed to show it)."""
    body = TEMPLATES.env.get_template("console/error.html").render(
        page=None, status=status, title=title, detail=detail, path=request.url.path
    )
    return HTMLResponse(body, status_code=status, headers=NO_STORE)


def format_when(value: Any) -> str:
    """A time as ``2026-12-07 05:10:58Z`` (UTC, seconds), or an em dash when there is none."""
    moment = _as_datetime(value)
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_ago(value: Any, now: datetime | None = None) -> str:
    """A time as how long ago it was (``3 min ago``), or ``never``."""
    moment = _as_datetime(value)
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            break
    else:
        amount = f"{int(seconds)} s"
    return f"in {amount}" if future else f"{amount} ago"


def format_number(value: Any) -> str:
    """A number with thousands separators; floats to at most 3 decimals."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)


def pretty_json(value: Any) -> Markup:
    """A value as indented JSON (escaped for HTML)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return Markup.escape(text)


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
