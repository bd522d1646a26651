"""Corral's HTTP API, spoken with Python's standard library only (urllib).

Nothing here imports bpy, so it runs (and can be tried) outside Blender. Every failure is
a FarmError whose text is one line meant for the artist: the farm's own words when it
refused (RFC 9457 problem bodies), a hint when it cannot be reached.
"""

import functools
import hashlib
import http.client
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

# Seconds to wait on one socket operation. Short: these calls run on Blender's UI thread.
PROBE_TIMEOUT = 5.0
SUBMIT_TIMEOUT = 15.0
POLL_TIMEOUT = 2.0
# An upload's socket operations (each block written, the answer) get longer: the farm
# checks and stores the whole file before it answers.
UPLOAD_TIMEOUT = 60.0
# Largest answer read; Corral's answers are small, anything bigger is not Corral.
MAX_ANSWER = 4 << 20

# The API's field names as the panel calls them, so a refusal points at what to change.
FIELD_LABELS = {
    "from": "Start frame",
    "to": "End frame",
    "chunk_size": "Batch size",
    "priority": "Priority",
    "scene": "Scene",
    "name": "Scene name",
    "engine": "Render engine",
    "fps": "Frame rate",
}


class FarmError(Exception):
    """A failed call to the farm, worded for the artist in one line."""

    def __init__(self, message, status=None, field=None):
        super().__init__(message)
        self.status = status
        self.field = field


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are refused: the token must never follow one to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def check_url(url):
    """The farm's base address without a trailing slash, or FarmError when it is not an
    http(s)://HOST[:PORT] address."""
    url = (url or "").strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise FarmError("Farm address `%s` is not valid; expected http://HOST:PORT" % url)
    if parts.scheme not in ("http", "https"):
        raise FarmError(
            "Farm address `%s` must start with http:// or https://" % url)
    if not parts.hostname:
        raise FarmError("Farm address `%s` names no host; expected http://HOST:PORT" % url)
    if parts.query or parts.fragment:
        raise FarmError("Farm address `%s` must not have a query or fragment" % url)
    return url


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def parse_address(address, token=""):
    """(base URL, token, fingerprints, server) of a farm address: `http(s)://HOST[:PORT]`,
    or the join string a farm prints, `corral://HOST:PORT?token=TOKEN&fp=FINGERPRINT`,
    whose fingerprints pin the farm's certificate (the farm is then reached over HTTPS,
    and only with that certificate). A token typed in the panel wins over the one in the
    string. `server` is what `corral submit --server` gets: the address, a join string
    without its token (which goes in the environment instead)."""
    address = (address or "").strip()
    token = (token or "").strip()
    if not address.startswith("corral://"):
        url = check_url(address)
        return url, token, [], url
    rest = address[len("corral://"):]
    hosts, _, query = rest.partition("?")
    host = hosts.rstrip("/").split(",")[0]
    fingerprints = []
    joined_token = ""
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key == "token":
            if not _TOKEN.match(value):
                raise FarmError("The farm address's token= is not a Corral token")
            joined_token = value
        elif key == "fp":
            for fp in value.split(","):
                fp = fp.replace(":", "").lower()
                if fp.startswith("sha256"):
                    fp = fp[len("sha256"):].lstrip(":= ").replace("fingerprint=", "")
                if not _FINGERPRINT.match(fp):
                    raise FarmError("The farm address's fp= is not a SHA-256 fingerprint")
                fingerprints.append(fp)
        else:
            raise FarmError("The farm address has `%s`, which is neither token nor fp"
                            % _one_line(key, 40))
    scheme = "https" if fingerprints else "http"
    server = "corral://%s" % hosts.rstrip("/")
    if fingerprints:
        server += "?fp=" + ",".join(fingerprints)
    return check_url("%s://%s" % (scheme, host)), token or joined_token, fingerprints, server


class _WrongCertificate(OSError):
    """The farm presented a certificate other than the pinned one."""


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to a farm whose certificate is pinned: names and authorities are not checked
    (a farm's certificate is self-signed), but the certificate must be one whose SHA-256
    was pinned, checked right after the handshake, before a byte of the request (or the
    token) is sent."""

    def __init__(self, *args, fingerprints=(), **kwargs):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(*args, context=context, **kwargs)
        self._fingerprints = fingerprints

    def connect(self):
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        presented = hashlib.sha256(der).hexdigest()
        if presented not in self._fingerprints:
            self.sock.close()
            raise _WrongCertificate(presented)


class _PinnedHandler(urllib.request.HTTPSHandler):
    def __init__(self, fingerprints):
        super().__init__()
        self._fingerprints = tuple(fingerprints)

    def https_open(self, req):
        return self.do_open(
            functools.partial(_PinnedConnection, fingerprints=self._fingerprints), req)


def _one_line(text, limit=300):
    """Text from the farm, made fit for one line of Blender's status bar."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Farm:
    """One farm: its base address and the token sent with every request (if any)."""

    def __init__(self, url, token=""):
        self.url, self.token, self.fingerprints, self.server = parse_address(url, token)
        self._opener = _OPENER
        if self.fingerprints:
            self._opener = urllib.request.build_opener(
                _NoRedirect, _PinnedHandler(self.fingerprints))

    def dashboard_url(self, job_id):
        return "%s/jobs/%s" % (self.url, urllib.parse.quote(job_id, safe=""))

    def _request(self, method, path, timeout, body=None, headers=None, length=None):
        """Sends one request; returns (status, parsed JSON or None). Raises FarmError for
        anything but a 2xx answer (with its status, so a caller can tell a 404)."""
        headers = dict(headers or {})
        headers.setdefault("Accept", "application/json")
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if length is not None:
            headers["Content-Length"] = str(length)
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                return answer.status, _json(answer.read(MAX_ANSWER + 1), self.url)
        except urllib.error.HTTPError as e:
            try:
                raw = e.read(MAX_ANSWER + 1)
            except OSError:
                raw = b""
            finally:
                e.close()
            raise self._refusal(e.code, raw) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, _WrongCertificate):
                raise FarmError(
                    "Refused to talk to %s: its certificate has fingerprint %s, which is not "
                    "the one in the farm address" % (self.url, reason.args[0])) from None
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            if "timed out" in str(reason).lower():
                raise FarmError(
                    "The farm at %s did not answer in time; is it running?" % self.url) from None
            raise FarmError(
                "Cannot reach the farm at %s (%s); is it running, and is the address right?"
                % (self.url, _one_line(str(reason).lower(), 120))) from None

    def _refusal(self, status, raw):
        """A FarmError for a 3xx/4xx/5xx answer, in the farm's own words when it sent a
        problem body."""
        problem = {}
        try:
            parsed = json.loads(raw[:MAX_ANSWER].decode("utf-8"))
            if isinstance(parsed, dict):
                problem = parsed
        except (ValueError, UnicodeDecodeError):
            pass
        detail = problem.get("detail") or problem.get("title") or ""
        detail = _one_line(detail) if isinstance(detail, str) else ""
        field = problem.get("field") if isinstance(problem.get("field"), str) else None
        if status in (401, 403):
            return FarmError(
                "The farm at %s refused the token (%d%s); check Token in Corral's panel"
                % (self.url, status, ": " + detail if detail else ""), status)
        if 300 <= status < 400:
            return FarmError(
                "The farm at %s answered %d, a redirect, which is not followed; give the "
                "farm's own address" % (self.url, status), status)
        if field:
            label = FIELD_LABELS.get(field, field)
            return FarmError("The farm refused %s: %s" % (label, detail or "invalid"),
                             status, field)
        if detail:
            return FarmError("The farm answered %d: %s" % (status, detail), status)
        return FarmError("The farm at %s answered %d" % (self.url, status), status)

    def scenes_folder(self):
        """The scenes folder of a `corral up` farm (which takes uploads), or None for a
        farm that does not offer uploads (its nodes read a shared folder). Also the first
        call of a submit: it tells at once when the farm cannot be reached or refuses the
        token."""
        try:
            _, body = self._request("GET", "/api/v1/local-farm/scenes", PROBE_TIMEOUT)
        except FarmError as e:
            if e.status in (404, 405):
                return None
            raise
        if not isinstance(body, dict) or not isinstance(body.get("folder"), str):
            raise FarmError("%s answered something that is not Corral's API; is it a "
                            "Corral farm?" % self.url)
        return body["folder"]

    def upload(self, path, name):
        """Uploads the .blend at `path` as `name`; returns the scene path to submit
        (`uploads/NAME.blend`, or `NAME-2.blend` when the name was taken)."""
        size = os.path.getsize(path)
        query = urllib.parse.urlencode({"name": name})
        with open(path, "rb") as body:
            _, answer = self._request(
                "POST", "/api/v1/local-farm/scenes?" + query, UPLOAD_TIMEOUT, body=body,
                headers={"Content-Type": "application/octet-stream"}, length=size)
        if not isinstance(answer, dict) or not isinstance(answer.get("scene"), str):
            raise FarmError("%s answered the upload with something that is not Corral's "
                            "API" % self.url)
        return answer["scene"]

    def submit(self, job):
        """`POST /api/v1/jobs`; returns the stored job (a dict with at least `id`)."""
        body = json.dumps(job).encode("utf-8")
        _, answer = self._request(
            "POST", "/api/v1/jobs", SUBMIT_TIMEOUT, body=body,
            headers={"Content-Type": "application/json"}, length=len(body))
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise FarmError("%s answered the submission with something that is not "
                            "Corral's API" % self.url)
        return answer

    def job(self, job_id):
        """`GET /api/v1/jobs/{id}`: the job's state and counts."""
        _, answer = self._request(
            "GET", "/api/v1/jobs/" + urllib.parse.quote(job_id, safe=""), POLL_TIMEOUT)
        if not isinstance(answer, dict):
            raise FarmError("%s answered something that is not Corral's API" % self.url)
        return answer


def _json(raw, url):
    if len(raw) > MAX_ANSWER:
        raise FarmError("%s sent an answer too large to be Corral's; is it a Corral farm?"
                        % url)
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise FarmError("%s answered something that is not JSON; is it a Corral farm?"
                        % url) from None
