"""The Business Configuration console (Payments module): server-rendered pages to list, view, add and edit payment
terms, payment term defaults, rejection codes and mandate revision codes (core/config_edit.py does the saving).

Sign-in is the API's own identity: a client's API key, once, on the sign-in form; the browser then holds a signed,
HttpOnly, SameSite=Strict session cookie naming the client (and the first characters of its key's hash, so rotating
the key ends the session) whose session must also be open in the audit store (signing out closes it). Every page
checks the client's configured security level: VIEW_CONFIG to look, EDIT_CONFIG to change (config/security.yaml);
a refusal is 403 naming the rule. Every form carries a CSRF token bound to the session. Jinja2 autoescapes
everything; no script runs on these pages (CSP `default-src 'self'`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cmp_pipelines.api.context import ApiContext, authenticate
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core import config_edit
from cmp_pipelines.core.config import ConfigError
from cmp_pipelines.core.config_payments import ApiClient
from cmp_pipelines.core.security import Refused, load_security
from cmp_pipelines.core.settings import paths

router = APIRouter(prefix="/console", include_in_schema=False)
COOKIE = "cmp_console"
LOGIN_COOKIE = "cmp_console_login"
SESSION_SECONDS = 8 * 3600
SECRET_FILE = "console_session.secret"
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'"}
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "console_templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))


class Denied(Exception):
    """A page the caller may not see: 401 (no session) or 403 (the rule that refused it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _secret() -> bytes:
    """Shared by every worker process: one random key in $CMP_KEYS_DIR, created 0600 on first use."""
    path = paths().keys_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def _sign(payload: dict) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    mac = hmac.new(_secret(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def _unsign(value: str | None) -> dict | None:
    if not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, hmac.new(_secret(), body.encode(), hashlib.sha256).hexdigest()):
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None


def _csrf(sid: str) -> str:
    return hmac.new(_secret(), f"csrf|{sid}".encode(), hashlib.sha256).hexdigest()


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.cmp
    if ctx.security is None:
        ctx.security = load_security(paths().config_dir)
    return ctx


def _client(request: Request) -> tuple[ApiClient, dict]:
    session = _unsign(request.cookies.get(COOKIE))
    if not session or session.get("exp", 0) < time.time() or not _audit().session_open(session.get("sid", ""),
                                                                                      session.get("client", "")):
        raise Denied(401, "sign in with your API key")
    for client in _ctx(request).clients_by_hash.values():
        if client.client_id == session.get("client") and (client.key_sha256 or "")[:16] == session.get("key"):
            return client, session
    raise Denied(401, "your session ended (the client's key changed or it was removed); sign in again")


def _allow(request: Request, client: ApiClient, operation: str) -> None:
    try:
        _ctx(request).security.authorize(f"API client {client.client_id}", client.security_level, operation)
    except Refused as exc:
        raise Denied(403, exc.message) from None


def _page(request: Request, template: str, status: int = 200, session: dict | None = None, **values) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        screens=config_edit.SCREENS.values(), csrf=_csrf(session["sid"]) if session else "",
        who=session.get("client") if session else None, **values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _denied(request: Request, denied: Denied) -> Response:
    if denied.status == 401 and request.method == "GET":
        return RedirectResponse(f"/console/login?next={quote(request.url.path)}", status_code=303, headers=HEADERS)
    heading = {401: "Sign in first", 403: "Refused", 404: "Not found"}.get(denied.status, "Refused")
    return _page(request, "denied.html", denied.status, heading=heading, message=denied.message)


async def _form(request: Request, session: dict | None = None, login_sid: str | None = None) -> dict[str, list[str]]:
    """The url-encoded body (no multipart parser needed); a missing or wrong CSRF token is 403."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    token = form.get("csrf", [""])[0]
    sid = session["sid"] if session else login_sid
    if not sid or not hmac.compare_digest(token, _csrf(sid)):
        raise Denied(403, "the form's security token is missing or stale: reload the page and submit it again")
    return form


def _screen(slug: str) -> config_edit.Screen:
    screen = config_edit.SCREENS.get(slug)
    if screen is None:
        raise Denied(404, f"no configuration screen {slug!r}")
    return screen


def _choices(request: Request, screen: config_edit.Screen) -> dict[str, tuple[str, ...]]:
    """Security levels from security.yaml; a reference to another screen's entries offers those (the loaders still
    judge what is posted)."""
    levels, choices = _ctx(request).security.levels, {}
    for f in screen.fields:
        if f.choices_from:
            other = config_edit.SCREENS[f.choices_from]
            choices[f.name] = tuple(str(e.get(other.key)) for e in config_edit.entries(paths().config_dir, other))
        else:
            choices[f.name] = levels if f.kind == "multi" else f.choices
    return choices


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/console/") and "//" not in target and "\\" not in target \
        else "/console/"


# ---- sign in and out ---------------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    sid = secrets.token_urlsafe(16)
    response = _page(request, "login.html", next=_safe_next(next), login_csrf=_csrf(sid))
    response.set_cookie(LOGIN_COOKIE, sid, max_age=900, httponly=True, samesite="strict", path="/console")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    try:
        form = await _form(request, login_sid=request.cookies.get(LOGIN_COOKIE))
    except Denied as denied:
        return _denied(request, denied)
    target = _safe_next(form.get("next", [""])[0])
    try:
        client = authenticate(_ctx(request), form.get("api_key", [""])[0].strip())
    except Problem as problem:
        sid = secrets.token_urlsafe(16)
        response = _page(request, "login.html", 401, next=target, login_csrf=_csrf(sid), error=problem.detail)
        response.set_cookie(LOGIN_COOKIE, sid, max_age=900, httponly=True, samesite="strict", path="/console")
        return response
    session = {"sid": secrets.token_urlsafe(16), "client": client.client_id, "key": (client.key_sha256 or "")[:16],
               "exp": int(time.time()) + SESSION_SECONDS}
    _audit().open_session(session["sid"], client.client_id, session["exp"])
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, _sign(session), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        path="/console", secure=_ctx(request).public_base_url.startswith("https://"))
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        _, session = _client(request)
        await _form(request, session)
    except Denied as denied:
        return _denied(request, denied)
    _audit().close_session(session["sid"])
    response = RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/console")
    return response


# ---- pages -------------------------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    try:
        session = _signed_in(request, "VIEW_CONFIG")
    except Denied as denied:
        return _denied(request, denied)
    counts = {s.slug: len(config_edit.entries(paths().config_dir, s)) for s in config_edit.SCREENS.values()}
    return _page(request, "home.html", session=session, counts=counts,
                 changes=_audit().changes(limit=10))


@router.get("/console.css")
def stylesheet() -> Response:
    return Response((Path(__file__).parent / "console_templates" / "console.css").read_text(), media_type="text/css",
                    headers={"Cache-Control": "max-age=3600"})


@router.get("/changes")
def changes(request: Request) -> Response:
    try:
        session = _signed_in(request, "VIEW_CONFIG")
    except Denied as denied:
        return _denied(request, denied)
    return _page(request, "changes.html", session=session, changes=_audit().changes(limit=500))


@router.get("/{slug}")
def list_entries(request: Request, slug: str) -> Response:
    try:
        session = _signed_in(request, "VIEW_CONFIG")
        screen = _screen(slug)
    except Denied as denied:
        return _denied(request, denied)
    return _page(request, "list.html", session=session, screen=screen,
                 entries=config_edit.entries(paths().config_dir, screen))


@router.get("/{slug}/new")
def new_form(request: Request, slug: str) -> Response:
    try:
        session = _signed_in(request, "EDIT_CONFIG")
        screen = _screen(slug)
    except Denied as denied:
        return _denied(request, denied)
    return _page(request, "form.html", session=session, screen=screen, entry={}, errors={}, other=[],
                 choices=_choices(request, screen), adding=True)


def _signed_in(request: Request, operation: str):
    """The session of a signed-in client allowed `operation` (config/security.yaml); Denied (401/403) otherwise."""
    client, session = _client(request)
    _allow(request, client, operation)
    return session


def _entry(request: Request, slug: str, entry_id: str, operation: str):
    """The signed-in session, the screen and its entry, for a caller allowed `operation`; Denied (401/403/404)."""
    session = _signed_in(request, operation)
    screen = _screen(slug)
    entry = config_edit.find(paths().config_dir, screen, entry_id)
    if entry is None:
        raise Denied(404, f"{screen.title}: no entry {entry_id!r} in {screen.file}")
    return session, screen, entry


@router.get("/{slug}/{entry_id}")
def view_entry(request: Request, slug: str, entry_id: str, saved: int | None = None) -> Response:
    try:
        session, screen, entry = _entry(request, slug, entry_id, "VIEW_CONFIG")
    except Denied as denied:
        return _denied(request, denied)
    response = _page(request, "view.html", session=session, screen=screen, entry=entry, saved=saved,
                     history=_audit().changes(screen.file, screen.section, entry_id))
    response.headers["ETag"] = f'"{config_edit.etag(entry)}"'
    return response


@router.get("/{slug}/{entry_id}/edit")
def edit_form(request: Request, slug: str, entry_id: str) -> Response:
    try:
        session, screen, entry = _entry(request, slug, entry_id, "EDIT_CONFIG")
    except Denied as denied:
        return _denied(request, denied)
    return _page(request, "form.html", session=session, screen=screen, entry=entry, errors={}, other=[],
                 choices=_choices(request, screen), adding=False, entry_id=entry_id, etag=config_edit.etag(entry))


@router.post("/{slug}/new")
async def add(request: Request, slug: str) -> Response:
    return await _save(request, slug, None)


@router.post("/{slug}/{entry_id}/edit")
async def edit(request: Request, slug: str, entry_id: str) -> Response:
    return await _save(request, slug, entry_id)


async def _save(request: Request, slug: str, entry_id: str | None) -> Response:
    try:
        client, session = _client(request)
        _allow(request, client, "EDIT_CONFIG")
        screen = _screen(slug)
        form = await _form(request, session)
    except Denied as denied:
        return _denied(request, denied)
    entry = config_edit.entry_from_form(screen, form)
    expected = form.get("etag", [""])[0]
    shown = dict(page="form.html", session=session, screen=screen, choices=_choices(request, screen),
                 adding=entry_id is None, entry_id=entry_id)
    try:
        saved = config_edit.save(paths().config_dir, _audit(), screen, entry, actor=f"API client {client.client_id}",
                                 security_level=client.security_level, entry_id=entry_id, expected_etag=expected)
    except config_edit.Rejected as rejected:
        return _page(request, shown.pop("page"), 422, entry=entry, errors=rejected.fields, other=rejected.other,
                     etag=expected, **shown)
    except config_edit.Conflict as conflict:
        current = conflict.current or entry
        return _page(request, shown.pop("page"), 409, entry=current, errors={}, other=[conflict.message],
                     etag=config_edit.etag(current) if conflict.current else expected, conflict=True, **shown)
    except (config_edit.EditImpossible, ConfigError) as exc:
        return _page(request, shown.pop("page"), 409, entry=entry, errors={}, other=[str(exc)], etag=expected,
                     **shown)
    except OSError as exc:  # a read-only or full configuration folder: say so, keep what was typed
        return _page(request, shown.pop("page"), 503, entry=entry, errors={}, etag=expected, **shown,
                     other=[f"config/{screen.file} could not be written ({exc.strerror or exc}); nothing was saved"])
    return RedirectResponse(f"/console/{slug}/{quote(str(saved.entry[screen.key]))}?saved={saved.change_id}",
                            status_code=303, headers=HEADERS)


_AUDITS: dict[Path, config_edit.ConfigAudit] = {}


def _audit() -> config_edit.ConfigAudit:
    """One store (and one connection per thread) per data folder, as the API's own store."""
    path = config_edit.audit_path(paths().data_dir)
    if path not in _AUDITS:
        _AUDITS[path] = config_edit.ConfigAudit(path)
    return _AUDITS[path]
