"""The console: a FastAPI app of server-rendered pages (Jinja2, autoescaped; no script) over the registry
port and the serving engine.

- ``/registry``: every version with its headline metrics beside the live one, paged; ``/registry/<n>``:
  one version in full, its report, approve / reject behind a confirmation page. Status changes go through
  ``ModelRegistry.set_status``, the call ``ecomrec models approve`` makes (so the local event log, or with
  ``--sagemaker`` the SageMaker Model Registry, records them).
- ``/explorer``: a user's top K from a chosen version's bundle (the engine's answer, as
  ``GET /recommendations`` gives it) with scores, generators, attributes and the user's history.

The app is built from injected parts (registry, report files, bundle fetcher), like the inference app."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from components.console import registry_view as rv
from components.console.explorer import ExplorerCache
from components.console.reports import REPORT_NAME, ReportFiles
from components.console.security import CSRF_FIELD, REPORT_CSP, CsrfError, check_unsafe_request, session_and_headers
from components.console.versions import VersionList
from components.errors import EcomrecError
from components.registry.base import APPROVED, REJECTED, ModelRegistry, ModelVersion
from components.serving.source import BundleFetcher

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PAGE_SIZES: Final = (25, 50, 100, 250)
MAX_FORM_BYTES: Final = 16_384
MAX_TOP_K: Final = 100  # as the inference service's default max_top_k
ACTIONS: Final = {"approve": APPROVED, "reject": REJECTED}
LOCAL_HOSTS: Final = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ConsoleConfig:
    group: str = "ecomrec"
    where: str = ""  # the registry as people know it: a folder, or "SageMaker Model Registry (region)"
    create_hint: str = "ecomrec pipeline run --local --output runs/online-retail"
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    return env


def create_console_app(registry: ModelRegistry, reports: ReportFiles, fetcher: BundleFetcher,
                       config: ConsoleConfig | None = None) -> FastAPI:
    config = config or ConsoleConfig()
    env = _templates()
    explorer_cache = ExplorerCache(fetcher)
    version_list = VersionList(registry, config.group)
    app = FastAPI(title="ecomrec console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console_config = config

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        started = time.perf_counter()
        body = env.get_template(template).render(
            request=request, csrf_token=getattr(request.state, "csrf_token", ""), group=config.group,
            where=config.where, **context)
        log.debug("rendered %s in %.1f ms", template, (time.perf_counter() - started) * 1000)
        return HTMLResponse(body, status_code=status_code)

    def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        return page(request, "error.html", status_code=status_code, title=title, message=message)

    def versions() -> tuple[list[ModelVersion], ModelVersion | None]:
        listed = version_list.get()
        return listed, rv.live_version(listed)

    def version_or_404(number: int) -> ModelVersion:
        return registry.describe(config.group, number)  # RegistryError -> the error page

    # ------------------------------------------------------------------ registry
    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/registry", status_code=303)

    @app.get("/registry", response_class=HTMLResponse)
    def registry_page(request: Request, page_number: int = 1, per_page: int = 50, status: str = "",
                      refresh: bool = False) -> HTMLResponse:
        if refresh:
            version_list.invalidate()
        listed, live = versions()
        if not listed:
            return page(request, "empty.html", create_hint=config.create_hint)
        per_page = per_page if per_page in PAGE_SIZES else 50
        shown = [v for v in reversed(listed) if not status or v.status == status]
        pages = max(1, -(-len(shown) // per_page))
        page_number = min(max(1, page_number), pages)
        chunk = shown[(page_number - 1) * per_page: page_number * per_page]
        live_row = rv.rows([live], live)[0] if live else None
        return page(request, "registry.html", rows=rv.rows(chunk, live), live=live_row,
                    headline=rv.HEADLINE, total=len(listed), shown=len(shown), page_number=page_number, pages=pages,
                    per_page=per_page, page_sizes=PAGE_SIZES, status=status,
                    statuses=sorted({v.status for v in listed}))

    @app.get("/registry/{number}", response_class=HTMLResponse)
    def version_page(request: Request, number: int, done: str = "") -> HTMLResponse:
        version = version_or_404(number)
        _, live = versions()
        has_report = reports.read(version, "report.html") is not None
        return page(request, "version.html", row=rv.rows([version], live)[0], headline=rv.HEADLINE, live=live,
                    details=rv.detail(version, live), has_report=has_report, done=done)

    @app.get("/registry/{number}/report/{name}")
    def report_file(request: Request, number: int, name: str) -> Response:
        version = version_or_404(number)
        body = reports.read(version, name) if REPORT_NAME.match(name) else None
        if body is None:
            return error_page(request, 404, "No report", f"version {number} has no evaluation report file "
                                                          f"{name!r} in this registry")
        if name.endswith(".png"):
            return Response(body, media_type="image/png")
        return HTMLResponse(body, headers={"content-security-policy": REPORT_CSP})

    @app.get("/registry/{number}/{action}", response_class=HTMLResponse)
    def confirm_page(request: Request, number: int, action: str) -> HTMLResponse:
        if action not in ACTIONS:
            return error_page(request, 404, "Not found", f"no page {request.url.path}")
        version = version_or_404(number)
        _, live = versions()
        return page(request, "confirm.html", version=version, action=action, target=ACTIONS[action], live=live,
                    row=rv.rows([version], live)[0], headline=rv.HEADLINE)

    @app.post("/registry/{number}/{action}")
    async def change_status(request: Request, number: int, action: str) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return error_page(request, 413, "Form too large", f"at most {MAX_FORM_BYTES} bytes")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            check_unsafe_request(request, form)
        except CsrfError as error:
            log.warning("refused %s %s: %s", request.method, request.url.path, error)
            return error_page(request, 403, "Refused", str(error))
        if action not in ACTIONS:
            return error_page(request, 404, "Not found", f"no action {action!r}; use approve or reject")
        reason = form.get("reason", "").strip()[:1000]
        from anyio import to_thread

        updated = await to_thread.run_sync(lambda: registry.set_status(config.group, number, ACTIONS[action], reason))
        version_list.invalidate()
        log.info("version %d of %s set to %s from the console", updated.version, config.group, updated.status)
        return RedirectResponse(f"/registry/{updated.version}?done={updated.status}", status_code=303)

    # ------------------------------------------------------------------ explorer
    @app.get("/explorer", response_class=HTMLResponse)
    def explorer_page(request: Request, user_id: str = "", version: int | None = None, k: int = 10) -> HTMLResponse:
        listed, live = versions()
        if not listed:
            return page(request, "empty.html", create_hint=config.create_hint)
        chosen = version_or_404(version) if version is not None else (live or listed[-1])
        choices = [v for v in reversed(listed)][:50]
        if chosen.version not in {v.version for v in choices}:
            choices.append(chosen)
        k = min(max(1, k), MAX_TOP_K)
        model = explorer_cache.get(f"{config.group}/{chosen.version}", chosen.model_data_url,
                                   label=f"version {chosen.version}", registry_version=chosen.version)
        explanation = model.explain(user_id.strip(), k) if user_id.strip() else None
        return page(request, "explorer.html", model=model, chosen=chosen, live=live, choices=choices, k=k,
                    user_id=user_id.strip(), explanation=explanation, sample_users=model.samples,
                    max_top_k=MAX_TOP_K)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # ------------------------------------------------------------------ errors are pages
    @app.exception_handler(EcomrecError)
    async def ecomrec_error(request: Request, error: EcomrecError) -> HTMLResponse:
        return error_page(request, 404 if "has no version" in str(error) else 400, type(error).__name__, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> HTMLResponse:
        message = "no such page" if error.status_code == 404 else str(error.detail)
        return error_page(request, error.status_code, f"Error {error.status_code}", message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> HTMLResponse:
        first = error.errors()[0] if error.errors() else {"loc": ("request",), "msg": "invalid"}
        name = str(first["loc"][-1])
        return error_page(request, 422, "Invalid request", f"{name}: {first['msg']}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> HTMLResponse:
        log.exception("console error on %s", request.url.path)
        return error_page(request, 500, "Internal error",
                          f"{type(error).__name__}; the console's log has the details")

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.middleware("http")(session_and_headers)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))  # added last: outermost
    return app
