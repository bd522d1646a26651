"""Schemathesis checks for Corral's APIs, loaded by tests/api/run.sh (SCHEMATHESIS_HOOKS).

- problem_body_on_error: every 4xx/5xx answer is an RFC 9457 problem
  (application/problem+json, `status` equal to the answer's, a `title`), and a 400 names the
  request field at fault (`field`), as the house rule says.
- refusal_stores_nothing: a request that changes state (POST, PUT, PATCH, DELETE) and is
  refused with a 4xx leaves the server's stored jobs and nodes as they were. The server is
  asked for them before each such request (`before_call`) and after its answer. Needs a
  single worker (run.sh passes --workers 1) so no other request runs in between. The
  test's own nodes (CORRAL_API_OWN_NODES) are left out: they re-announce themselves every
  few seconds, so one that a generated DELETE removed comes back at any moment.

`before_call` also shortens long-polls: a generated `wait` within the node's limit (120 s)
is cut to 2 s, so a job that happens to exist and stay queued cannot hold a request for
minutes. Values the node must refuse (negative, not a number, over 120) are sent as they are.
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["CORRAL_API_BASE"].rstrip("/")
KIND = os.environ["CORRAL_API_KIND"]  # "orchestrator" or "node"
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
OWN_NODES = set(filter(None, os.environ.get("CORRAL_API_OWN_NODES", "").split()))
LONGEST_WAIT = 2.0

_before = {}


def _get(path):
    with urllib.request.urlopen(BASE + path, timeout=30) as answer:
        return json.load(answer)


def stored():
    """What a request could have stored: how many jobs, and on an orchestrator which nodes
    (other than the test's own)."""
    if KIND == "orchestrator":
        return {
            "jobs": _get("/api/v1/jobs?limit=1")["total"],
            "nodes": sorted(n["url"] for n in _get("/api/v1/nodes") if n["url"] not in OWN_NODES),
        }
    return {"jobs": len(_get("/jobs"))}


def _shorten_wait(case):
    query = case.query or {}
    raw = query.get("wait")
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return
    if LONGEST_WAIT < seconds <= 120:
        query["wait"] = LONGEST_WAIT


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    _shorten_wait(case)
    if case.method.upper() in CHANGING:
        _before[id(case)] = stored()


@schemathesis.check
def problem_body_on_error(ctx, response, case):
    status = response.status_code
    if status < 400 or case.method.upper() == "HEAD":
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    essence = content_type.split(";")[0].strip().lower()
    if essence != "application/problem+json":
        raise AssertionError(
            f"{status} answered with content type {content_type!r}, not application/problem+json"
        )
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{status} problem body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise AssertionError(f"{status} problem body is not an object: {body!r}")
    if body.get("status") != status:
        raise AssertionError(f"problem `status` {body.get('status')!r} but the answer is {status}")
    if not isinstance(body.get("title"), str) or not body["title"]:
        raise AssertionError(f"{status} problem without a title: {body!r}")
    if status == 400 and not isinstance(body.get("field"), str):
        raise AssertionError(f"400 problem names no field: {body!r}")
    return None


@schemathesis.check
def refusal_stores_nothing(ctx, response, case):
    before = _before.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    after = stored()
    if after != before:
        raise AssertionError(
            f"refused with {response.status_code}, yet stored counts went {before} -> {after}"
        )
    return None
