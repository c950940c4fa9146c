"""The FastAPI app: routes over deployments.api (the functions the CLI calls), built from its
collaborators so a test or a server hands in its own stores, runtime and Prefect access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import api
from deployments.http import views
from deployments.http.auth import login, login_form, require_token
from deployments.http.limits import BodySizeLimit
from deployments.http.reads import StoreReads
from deployments.http.schemas import (IDEMPOTENCY_KEY, Answer, AnswerOut, CancelOut, JobBrief, JobDetail, JobPage,
                                      Metrics, Problem, SubmitOut)
from spotshift.job_actions import WrongJobState, check_answerable
from spotshift.job_inputs import InputsRefused
from spotshift.models import JobCreate, JobStatus
from spotshift.stores import InvalidTransition, JobIdConflict, JobNotFound

PAGE_LIMIT = 50
ERRORS = {401: {"model": Problem, "description": "no token, or an unknown or revoked one"},
          404: {"model": Problem, "description": "no such job"}}
STATE_ERROR = {409: {"model": Problem, "description": "the job's status does not allow it (status: the current one)"}}


@dataclass
class ApiContext:
    """The app's collaborators: `runtime` (flows.runtime.Runtime) holds the stores written to, S3,
    the compute backend and the clock; `reads` the stores the GET routes read; `tokens` the API
    tokens (from the same in-memory copy as `reads` when that is in memory); `flow_runs` reads and
    cancels Prefect flow runs; `submit_run` how POST /jobs starts a job (see api.submit)."""

    runtime: Any
    tokens: Any  # spotshift.stores.tokens.TokenStore
    reads: StoreReads
    flow_runs: Any
    submit_run: api.RunMode = "deployment"

    async def read(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` on the event loop when the reads (and tokens) are served from memory,
        else in the threadpool, as a store's network call must be."""
        if self.reads.in_memory:
            return function(*args)
        return await run_in_threadpool(function, *args)


def create_app(runtime: Any, tokens: Any, *, reads: StoreReads | None = None, flow_runs: Any = None,
               submit_run: api.RunMode = "deployment") -> FastAPI:
    from flows.cancel import PrefectFlowRuns

    settings = runtime.settings
    app = FastAPI(title="spotshift", version="1", description=__doc__, responses=ERRORS)
    app.state.api = ApiContext(runtime=runtime, tokens=tokens, reads=reads or StoreReads(runtime.jobs, runtime.ledger),
                               flow_runs=flow_runs or PrefectFlowRuns(), submit_run=submit_run)
    app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins, allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    _add_error_handlers(app)
    app.get("/health", tags=["service"], responses={})(health)
    app.get("/login", response_class=HTMLResponse, tags=["pages"], responses={})(login_form)
    app.post("/login", response_class=HTMLResponse, response_model=None, tags=["pages"], responses={})(login)
    authed = [Depends(require_token)]
    app.post("/jobs", status_code=201, response_model=SubmitOut, dependencies=authed, tags=["jobs"],
             responses=STATE_ERROR)(submit_job)
    app.get("/jobs", response_model=JobPage, dependencies=authed, tags=["jobs"])(list_jobs)
    app.get("/jobs/{job_id}", response_model=JobDetail, dependencies=authed, tags=["jobs"])(get_job)
    app.post("/jobs/{job_id}/approve", response_model=AnswerOut, dependencies=authed, tags=["jobs"],
             responses=STATE_ERROR)(approve_job)
    app.post("/jobs/{job_id}/reject", response_model=AnswerOut, dependencies=authed, tags=["jobs"],
             responses=STATE_ERROR)(reject_job)
    app.post("/jobs/{job_id}/cancel", response_model=CancelOut, dependencies=authed, tags=["jobs"],
             responses=STATE_ERROR)(cancel_job)
    app.get("/jobs/{job_id}/metrics", response_model=Metrics, dependencies=authed, tags=["jobs"])(job_metrics)
    app.get("/jobs/{job_id}/view", response_class=HTMLResponse, dependencies=authed, tags=["pages"])(job_page)
    return app


async def _ctx(request: Request) -> ApiContext:  # async: no I/O, so no trip through the threadpool
    return request.app.state.api


Ctx = Annotated[ApiContext, Depends(_ctx)]


async def health() -> dict:
    return {"status": "ok"}


def submit_job(body: JobCreate, ctx: Ctx, idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY,
        description="the same key again returns the same job and starts nothing")] = None) -> SubmitOut:
    """Store a job and start its train-job flow run (idempotent on the Idempotency-Key header). On
    EC2, an S3 input no role may read is a 422 naming the field; a local model or dataset is
    uploaded under the job's prefix first (`uploaded_inputs`: where to, size, seconds)."""
    if idempotency_key is not None:
        body = JobCreate.model_validate({**body.model_dump(), "idempotency_key": idempotency_key})
    job_id = api.submit(body, run=ctx.submit_run, runtime=ctx.runtime)
    return SubmitOut.of(ctx.runtime.jobs.get(job_id))


async def list_jobs(ctx: Ctx, status: JobStatus | None = None, offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_LIMIT) -> Response:
    """Jobs, oldest first, `limit` from `offset`; only those in `status` when given."""
    def page() -> bytes:
        jobs = ctx.reads.jobs(status)
        end = offset + limit
        body = JobPage(jobs=[JobBrief.of(j) for j in jobs[offset:end]], total=len(jobs), offset=offset, limit=limit,
                       next_offset=end if end < len(jobs) else None)
        return body.model_dump_json().encode()

    body = await ctx.read(ctx.reads.cached, ("page", status, offset, limit), page)
    return Response(body, media_type="application/json")


async def get_job(job_id: str, ctx: Ctx) -> Response:
    """The job's status, step, placements, migrations, cost so far against on-demand, flow run link."""
    detail = await ctx.read(views.job_detail, ctx, job_id)
    return Response(detail.model_dump_json(), media_type="application/json")


def approve_job(job_id: str, ctx: Ctx, body: Answer | None = None) -> AnswerOut | JSONResponse:
    """Approve the plan or move the job's flow run waits on (409 unless the job awaits approval)."""
    return _answer(ctx, job_id, True, body or Answer())


def reject_job(job_id: str, ctx: Ctx, body: Answer | None = None) -> AnswerOut | JSONResponse:
    """Reject the plan or move the job's flow run waits on (409 unless the job awaits approval)."""
    return _answer(ctx, job_id, False, body or Answer())


def _answer(ctx: ApiContext, job_id: str, approved: bool, body: Answer) -> AnswerOut | JSONResponse:
    job = ctx.runtime.jobs.get(job_id)
    check_answerable(job)
    try:
        run_id = api.approve(job_id, reject=not approved, comment=body.comment, runtime=ctx.runtime)
    except ValueError as exc:  # the job says it waits, its flow run does not (yet): a 409 all the same
        return _problem(409, str(exc), job.status)
    return AnswerOut(job_id=job_id, flow_run_id=run_id, approved=approved)


def cancel_job(job_id: str, ctx: Ctx) -> CancelOut:
    """Cancel the flow run, terminate every instance, close and bill the workloads; checkpoints
    stay. Cancelling a cancelled job again is not an error; a finished one is a 409."""
    return CancelOut(**api.cancel(job_id, runtime=ctx.runtime, flow_runs=ctx.flow_runs))


def job_metrics(job_id: str, ctx: Ctx) -> Metrics:
    """The loss curve: metrics.jsonl under the job's prefix, else the last heartbeat's loss."""
    return views.job_metrics(ctx, job_id)


def job_page(job_id: str, ctx: Ctx) -> HTMLResponse:
    """The job page: placements per zone on a timeline, cost against on-demand, loss, migrations."""
    return HTMLResponse(views.render_job_page(views.job_detail(ctx, job_id), views.job_metrics(ctx, job_id)))


def _problem(status: int, detail: str, job_status: Any = None) -> JSONResponse:
    body = {"detail": detail} if job_status is None else {"detail": detail, "status": str(job_status)}
    return JSONResponse(body, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    app.exception_handler(JobNotFound)(lambda request, exc: _problem(404, str(exc)))
    app.exception_handler(WrongJobState)(lambda request, exc: _problem(409, str(exc), exc.status))
    app.exception_handler(InvalidTransition)(lambda request, exc: _problem(409, str(exc), exc.current))
    app.exception_handler(JobIdConflict)(lambda request, exc: _problem(409, str(exc)))
    app.exception_handler(ValidationError)(lambda request, exc: JSONResponse(
        {"detail": exc.errors(include_url=False, include_context=False)}, status_code=422))
    app.exception_handler(InputsRefused)(lambda request, exc: JSONResponse({"detail": [
        {"loc": ["body", r.field], "msg": r.reason, "type": "input_refused", "input": r.value}
        for r in exc.refusals]}, status_code=422))
    app.exception_handler(StarletteHTTPException)(_http_error)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A browser (it asks for HTML) without a token is sent to sign in, then back to the page."""
    if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
    return await http_exception_handler(request, exc)


def app_from_settings() -> FastAPI:
    """The app `spotshift api` serves: stores, AWS and Prefect from settings. Call it outside an event loop."""
    from blocks.stores import open_token_store
    from deployments.http.reads import snapshot_reads
    from flows.runtime import Runtime

    runtime = Runtime.from_settings()  # cancel needs the compute backend the flows use
    snapshot = snapshot_reads(runtime.settings)
    if snapshot is None:
        return create_app(runtime, open_token_store(runtime.settings))
    reads, tokens = snapshot
    return create_app(runtime, tokens, reads=reads)
