"""`spotshift api [--host --port]`, `spotshift api token create --name NAME | revoke NAME` and
`spotshift cancel JOB`: the CLI side of the HTTP API."""

from __future__ import annotations

import argparse
import json
import sys


def add_api_commands(sub) -> None:
    """Add `api` (with its `token` commands) and `cancel` to the `spotshift` subcommands."""
    a = sub.add_parser("api", help="serve the jobs HTTP API (uvicorn), or manage its tokens")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=8080)
    a.add_argument("--access-log", action="store_true", help="log every request (off: a line per request costs "
                   "about a third of a cached read's CPU)")
    token = a.add_subparsers(dest="api_command").add_parser("token", help="API bearer tokens")
    actions = token.add_subparsers(dest="token_action", required=True)
    actions.add_parser("create", help="create a token; it is printed once, as the last word").add_argument(
        "--name", required=True, help="who or what uses it (letters, digits, . _ -)")
    actions.add_parser("revoke", help="revoke the active token of that name").add_argument("name")
    c = sub.add_parser("cancel", help="cancel a job: flow run, instances, workloads (checkpoints stay)")
    c.add_argument("job_id")


def run_api_command(args: argparse.Namespace) -> int:
    if args.command == "cancel":
        from deployments import api

        print(json.dumps(api.cancel(args.job_id), indent=2))
        return 0
    if getattr(args, "api_command", None) == "token":
        return _token(args)
    import uvicorn

    from deployments.http.app import app_from_settings

    app = app_from_settings()  # before uvicorn's event loop: Prefect's block loading is sync only outside one
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def _token(args: argparse.Namespace) -> int:
    from blocks.stores import open_token_store
    from spotshift.models import utcnow
    from spotshift.stores.tokens import TokenNotFound

    tokens = open_token_store()
    if args.token_action == "create":
        token = tokens.create(args.name, now=utcnow())
        print(f"API token {args.name!r} (shown once; only its hash is stored): {token}")
        return 0
    try:
        count = tokens.revoke(args.name, now=utcnow())
    except TokenNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"revoked {count} token(s) named {args.name!r}")
    return 0
