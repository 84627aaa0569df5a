"""Write a Sluice connector in Python.

A connector is a WebAssembly component targeting the ``sluice:connector`` WIT world (the copy
shipped in ``sluice_sdk/wit/``). componentize-py generates the world's bindings (the
``wit_world`` package) when it builds the component; this module wraps them in the same concepts
as the Rust SDK:

- a typed manifest (:class:`Manifest`, :class:`Stream`, :class:`Secret` dataclasses);
- a :class:`Connector` base class with ``manifest`` / ``validate`` / ``discover`` / ``sync``;
- :class:`Batcher`, which emits records in batches and checkpoints after the records it covers;
- :func:`fetch`, outbound HTTP through the host, with secrets injected by the host as headers;
- :class:`ConnectorError` (``code``, ``message``): raised anywhere in a call, it is returned to the
  host as the WIT ``connector-error`` (never a trap).

An app module ends with ``Connector = sluice_sdk.export(MyConnector)`` (componentize-py looks the
export up by that name), and is built with ``sluice-py-build app -o app.wasm``.

Nothing here touches ``wit_world`` at import time, so ``sluice_sdk.build`` runs on a plain Python.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urljoin

__all__ = [
    "Batcher",
    "Connector",
    "ConnectorError",
    "LoopGuard",
    "Manifest",
    "Response",
    "Secret",
    "SecretHeader",
    "Stream",
    "SyncRequest",
    "bearer",
    "emit",
    "checkpoint",
    "export",
    "fetch",
    "log",
    "now_ms",
    "clamp_to_now",
    "secret",
]

#: The WIT error codes, as the host names them.
ERROR_CODES = (
    "invalid-credentials",
    "insufficient-scope",
    "invalid-config",
    "unreachable",
    "rate-limited",
    "internal",
)


class ConnectorError(Exception):
    """An expected failure: returned to the host as ``connector-error {code, message}``.

    ``code`` is one of :data:`ERROR_CODES` (``invalid-credentials``, ``insufficient-scope``,
    ``invalid-config``, ``unreachable``, ``rate-limited``, ``internal``); the message is one
    line and must never contain a credential.
    """

    def __init__(self, code: str, message: str) -> None:
        # The API spells codes with underscores (``invalid_credentials``), the WIT with hyphens.
        code = code.replace("_", "-")
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}; one of {', '.join(ERROR_CODES)}")
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_status(cls, status: int, message: str) -> "ConnectorError":
        """401 ``invalid-credentials``, 403 ``insufficient-scope``, 404 ``invalid-config``,
        429 ``rate-limited``, 5xx ``unreachable``, anything else ``internal``."""
        code = {401: "invalid-credentials", 403: "insufficient-scope", 404: "invalid-config", 429: "rate-limited"}.get(
            status, "unreachable" if 500 <= status <= 599 else "internal"
        )
        return cls(code, message)

    def __repr__(self) -> str:
        return f"ConnectorError({self.code!r}, {self.message!r})"


# --- the typed manifest -------------------------------------------------------------------


@dataclass
class Secret:
    """A credential the connector uses, by name (the host injects it; see :func:`fetch`)."""

    name: str
    description: str = ""
    required: bool = True


@dataclass
class Stream:
    """One table: ``name`` (``[a-z][a-z0-9_]*``), the JSON Schema of one record (a dict with
    ``properties``), the fields that identify a record and the field incremental syncs advance on."""

    name: str
    json_schema: Dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    primary_key: List[str] = field(default_factory=list)
    cursor_field: Optional[str] = None
    description: str = ""

    def _to_wit(self) -> Any:
        from wit_world.imports import types

        return types.StreamSpec(
            name=self.name,
            description=self.description,
            primary_key=list(self.primary_key),
            cursor_field=self.cursor_field,
            json_schema=json.dumps(self.json_schema),
        )


@dataclass
class Manifest:
    """The static description of a connector (see ``wit/README.md``, ``connector-manifest``)."""

    id: str
    name: str
    version: str
    description: str = ""
    config_schema: Dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    secrets: List[Secret] = field(default_factory=list)
    #: Outbound destinations: ``https://api.example.com``, ``http://host:port``,
    #: ``{config.FIELD}`` for the origin of a URL in the config.
    hosts: List[str] = field(default_factory=list)
    streams: List[Stream] = field(default_factory=list)
    memory_mib: Optional[int] = None

    def _to_wit(self) -> Any:
        from wit_world.exports import connector

        return connector.ConnectorManifest(
            id=self.id,
            name=self.name,
            version=self.version,
            description=self.description,
            config_schema=json.dumps(self.config_schema),
            secrets=[connector.SecretSpec(name=s.name, description=s.description, required=s.required) for s in self.secrets],
            hosts=list(self.hosts),
            streams=[s._to_wit() for s in self.streams],
            memory_mib=self.memory_mib,
        )


@dataclass
class SyncRequest:
    """What :meth:`Connector.sync` receives."""

    #: The connector's config object.
    config: Dict[str, Any]
    #: Streams to sync (never empty).
    streams: List[str]
    #: Committed state per stream, as last checkpointed (empty on a full refresh).
    state: Dict[str, Any]
    #: When this run started, RFC 3339 UTC (world 0.2.0; ``None`` when built against 0.1.0).
    started_at: Optional[str] = None
    #: The run's id (world 0.2.0; ``None`` when built against 0.1.0).
    run_id: Optional[str] = None

    def selected(self, stream: str) -> bool:
        """Whether ``stream`` was selected for this run."""
        return stream in self.streams


class Connector:
    """Base class of a connector. Override :meth:`manifest`, :meth:`validate` and :meth:`sync`
    (and :meth:`discover` if the streams depend on the config); export it with :func:`export`.

    Raise :class:`ConnectorError` for every expected failure. Any other exception is a bug: it
    is logged with its traceback and returned as ``internal``.
    """

    def manifest(self) -> Manifest:
        """Static description. Must not call any import (no HTTP, no logs, no secrets)."""
        raise NotImplementedError

    def validate(self, config: Dict[str, Any]) -> Any:
        """Checks config and credentials against the upstream; returns a JSON-able account summary."""
        raise NotImplementedError

    def discover(self, config: Dict[str, Any]) -> List[Stream]:
        """The streams this config produces; defaults to the manifest's."""
        return self.manifest().streams

    def sync(self, request: SyncRequest) -> None:
        """Reads the selected streams, emitting records and checkpoints as it goes."""
        raise NotImplementedError


def _parse(what: str, text: str, code: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConnectorError(code, f"{what} is not valid JSON: {e}") from None


def _as_wit_error(e: ConnectorError) -> Any:
    from wit_world.imports import types

    code = getattr(types.ErrorCode, e.code.upper().replace("-", "_"))
    return types.ConnectorError(code=code, message=e.message)


def _guard(call: Callable[[], Any]) -> Any:
    """Runs one export: a :class:`ConnectorError` (or any other exception, as ``internal``)
    becomes componentize-py's ``Err(connector-error)``, the WIT result's error case."""
    from componentize_py_types import Err

    try:
        return call()
    except ConnectorError as e:
        raise Err(_as_wit_error(e)) from None
    except Err as e:  # raised by a raw `wit_world` import the app called itself
        from wit_world.imports import types

        if isinstance(e.value, types.ConnectorError):
            raise
        detail = getattr(e.value, "value", e.value)
        raise Err(_as_wit_error(ConnectorError("internal", f"{type(e.value).__name__}: {detail}"))) from None
    except Exception as e:  # a bug in the connector: diagnosable from the run's log, not a trap
        traceback.print_exc(file=sys.stderr)
        raise Err(_as_wit_error(ConnectorError("internal", f"{type(e).__name__}: {e}"))) from None


def export(cls: type) -> type:
    """Makes a :class:`Connector` subclass the component's ``connector`` export.

    componentize-py instantiates the class named ``Connector`` in the app module, so end the
    app with ``Connector = sluice_sdk.export(MyConnector)``.
    """
    from wit_world import exports

    impl = cls()

    class _Export(exports.Connector):  # type: ignore[misc]
        def manifest(self) -> Any:
            return impl.manifest()._to_wit()

        def validate(self, config: str) -> str:
            return _guard(lambda: json.dumps(impl.validate(_parse("config", config, "invalid-config"))))

        def discover(self, config: str) -> Any:
            return _guard(lambda: [s._to_wit() for s in impl.discover(_parse("config", config, "invalid-config"))])

        def sync(self, request: Any) -> None:
            def run() -> None:
                _batchers.clear()
                impl.sync(
                    SyncRequest(
                        config=_parse("config", request.config, "invalid-config"),
                        streams=list(request.streams),
                        state={s: _parse(f"state of {s}", v, "internal") for s, v in request.state},
                        started_at=getattr(request, "started_at", None),
                        run_id=getattr(request, "run_id", None),
                    )
                )
                # Records a connector pushed and never flushed are emitted, not dropped.
                for batcher in _batchers:
                    batcher.flush()
                _batchers.clear()

            _guard(run)

    _Export.__name__ = _Export.__qualname__ = "Connector"
    return _Export


# --- HTTP ----------------------------------------------------------------------------------


@dataclass
class SecretHeader:
    """Ask the host to put secret ``secret`` into ``header``, after ``prefix``."""

    header: str
    secret: str
    prefix: str = ""


def bearer(secret_name: str) -> SecretHeader:
    """``Authorization: Bearer <secret>``, injected by the host."""
    return SecretHeader("authorization", secret_name, "Bearer ")


@dataclass
class Response:
    """A response, after the host's redirects, retries and rate-limit waits."""

    status: int
    #: Header names are lowercase.
    headers: List[Tuple[str, str]]
    body: bytes
    #: The URL requested; relative links resolve against it.
    url: str

    def header(self, name: str) -> Optional[str]:
        """The first value of a header (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``internal`` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ConnectorError("internal", f"{_no_query(self.url)}: unexpected response body: {e}") from None

    def raise_for_status(self) -> "Response":
        """``self`` for a 2xx status, else :meth:`ConnectorError.from_status` with the upstream's
        ``message`` if its body has one."""
        if 200 <= self.status < 300:
            return self
        detail = ""
        try:
            body = json.loads(self.body)
            if isinstance(body, dict) and isinstance(body.get("message"), str):
                detail = ": " + body["message"].splitlines()[0][:200]
        except ValueError:
            pass
        raise ConnectorError.from_status(self.status, f"{_no_query(self.url)} answered {self.status}{detail}")

    def next_link(self) -> Optional[str]:
        """The ``rel="next"`` target of the ``Link`` headers, resolved against :attr:`url`."""
        for k, v in self.headers:
            if k.lower() != "link":
                continue
            for part in v.split(","):
                target, _, params = part.strip().partition(";")
                target = target.strip()
                if not (target.startswith("<") and target.endswith(">")):
                    continue
                rels = [p.strip() for p in params.split(";")]
                if any(p.replace(" ", "") in ('rel="next"', "rel=next") for p in rels):
                    return urljoin(self.url, target[1:-1])
        return None


def _no_query(url: str) -> str:
    return url.split("?", 1)[0]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def fetch(
    url: str,
    *,
    method: str = "GET",
    params: Optional[Mapping[str, Any]] = None,
    headers: Optional[Mapping[str, str]] = None,
    secret_headers: Sequence[SecretHeader] = (),
    json_body: Any = None,
    body: Optional[bytes] = None,
    idempotent: bool = False,
) -> Response:
    """Sends a request through the host's ``http.fetch``.

    The host checks the destination (the manifest's ``hosts``), injects ``secret_headers``,
    follows redirects, retries idempotent requests and waits out rate limits. A non-2xx status is
    a :class:`Response` (see :meth:`Response.raise_for_status`); a transport failure is a
    :class:`ConnectorError` (``unreachable`` for timeouts and connection errors,
    ``invalid-config`` for a denied or malformed destination, ``internal`` for a destination the
    upstream chose that the host refused (a redirect or ``Link`` header: the host's message starts
    ``the upstream``), ``invalid-credentials`` for an unknown secret, ``internal`` for a body over
    the host's cap).
    """
    from componentize_py_types import Err
    from wit_world.imports import http

    method = method.upper()
    if method not in _METHODS:
        raise ConnectorError("internal", f"unsupported method {method}")
    if params:
        url += ("&" if "?" in url else "?") + "&".join(
            f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in params.items()
        )
    hdrs = list((headers or {}).items())
    if json_body is not None:
        body = json.dumps(json_body).encode()
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("content-type", "application/json"))
    request = http.Request(
        method=getattr(http.Method, method),
        url=url,
        headers=hdrs,
        body=body,
        secret_headers=[http.SecretHeader(header=s.header, secret=s.secret, prefix=s.prefix) for s in secret_headers],
        idempotent=idempotent,
    )
    try:
        r = http.fetch(request)
    except Err as e:
        raise _http_error(e.value, url) from None
    return Response(status=r.status, headers=list(r.headers), body=bytes(r.body), url=url)


#: How the host's ``denied`` message begins when the upstream chose the refused destination.
UPSTREAM_DENIED_PREFIX = "the upstream "


def _http_error(err: Any, url: str) -> ConnectorError:
    kind = type(err).__name__.removeprefix("HttpError_")
    value = getattr(err, "value", None)
    code = {
        "Timeout": "unreachable",
        "Connection": "unreachable",
        "Denied": "invalid-config",
        "InvalidRequest": "invalid-config",
        "UnknownSecret": "invalid-credentials",
        "TooLarge": "internal",
    }.get(kind, "internal")
    if kind == "Denied" and str(value).startswith(UPSTREAM_DENIED_PREFIX):
        code = "internal"  # the upstream's redirect or Link header, not the user's config
    detail = f": {value}" if value is not None else ""
    return ConnectorError(code, f"{_no_query(url)}: {kind}{detail}")


# --- records -------------------------------------------------------------------------------


def _emit_error(err: Any) -> ConnectorError:
    kind = type(err).__name__.removeprefix("EmitError_")
    return ConnectorError("internal", f"{kind}: {getattr(err, 'value', '')}")


def emit(stream: str, records: Iterable[Any]) -> None:
    """Emits one batch of records (JSON objects, or already serialized strings) to ``stream``.
    Prefer :class:`Batcher`."""
    from componentize_py_types import Err
    from wit_world.imports import records as raw

    batch = [r if isinstance(r, str) else json.dumps(r) for r in records]
    try:
        raw.emit(stream, batch)
    except Err as e:
        raise _emit_error(e.value) from None


def checkpoint(stream: str, state: Any) -> None:
    """Records the state ``stream`` has reached; it covers every record emitted before."""
    from componentize_py_types import Err
    from wit_world.imports import records as raw

    try:
        raw.checkpoint(stream, json.dumps(state))
    except Err as e:
        raise _emit_error(e.value) from None


class LoopGuard:
    """Ends a listing whose paging goes round in circles (a broken or hostile upstream): a
    next-page cursor or URL already followed, or new cursors that keep bringing the records of a
    page already read. Without it a connector re-reads the same records until the run's deadline
    (hours). Raises ``ConnectorError("internal", ...)``: the run fails, nothing of it is
    committed. The Rust SDK's ``sluice_sdk::paging::LoopGuard`` does the same.

    ``guard.follow(url)`` before following a cursor; ``guard.page(len(items), body)`` for each
    page (its body when it is only the records, else e.g. the first and last record's keys)."""

    #: Consecutive pages without a record a listing may answer before it is taken for a loop.
    MAX_EMPTY_PAGES = 20

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._cursors: set = set()
        self._pages: set = set()
        self._read = 0
        self._empty = 0

    def follow(self, cursor: str) -> None:
        """Call before following ``cursor``; raises when this listing followed it already."""
        key = hash(cursor)
        if key in self._cursors:
            self._loop(f"its next-page cursor repeats one already followed (after {self._read} pages)")
        self._cursors.add(key)

    def page(self, count: int, *identity: Any) -> None:
        """Call for each page read: ``count`` records identified by ``identity`` (str/bytes)."""
        self._read += 1
        if count == 0:
            self._empty += 1
            if self._empty > self.MAX_EMPTY_PAGES:
                self._loop(f"{self._empty} pages in a row came without a record and still pointed to a next one")
            return
        self._empty = 0
        key = hash((count,) + tuple(identity))
        if key in self._pages:
            self._loop(f"page {self._read} repeats the records of a page already read")
        self._pages.add(key)

    def _loop(self, what: str) -> None:
        raise ConnectorError("internal", f"{self.subject}: the upstream's paging goes round in circles: {what}; stopped")


#: Every :class:`Batcher` made since the current ``sync`` began: flushed when it returns.
_batchers: List["Batcher"] = []


class Batcher:
    """Buffers records per stream and emits a batch every ``size`` records; :meth:`checkpoint`
    flushes the stream first, so a state never precedes the records it covers. Call
    :meth:`flush` at the end of a sync (or use the batcher as a context manager); records still
    pending when ``sync`` returns are emitted then (an error there fails the sync), so a
    forgotten flush loses nothing."""

    def __init__(self, size: int = 1000) -> None:
        self.size = max(1, size)
        self._pending: Dict[str, List[str]] = {}
        self.emitted = 0
        _batchers.append(self)

    def push(self, stream: str, record: Any) -> None:
        """Adds a record (a dict, or a serialized JSON object); emits the batch when full."""
        buf = self._pending.setdefault(stream, [])
        buf.append(record if isinstance(record, str) else json.dumps(record))
        if len(buf) >= self.size:
            self.flush_stream(stream)

    def flush_stream(self, stream: str) -> None:
        """Emits the pending records of ``stream``."""
        buf = self._pending.get(stream)
        if buf:
            self._pending[stream] = []
            emit(stream, buf)
            self.emitted += len(buf)

    def flush(self) -> None:
        """Emits the pending records of every stream."""
        for stream in list(self._pending):
            self.flush_stream(stream)

    def checkpoint(self, stream: str, state: Any) -> None:
        """Flushes ``stream``, then checkpoints ``state`` for it."""
        self.flush_stream(stream)
        checkpoint(stream, state)

    def pending(self, stream: str) -> int:
        """Records of ``stream`` buffered, not yet emitted."""
        return len(self._pending.get(stream, ()))

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.flush()


# --- secrets, logs, clock ------------------------------------------------------------------


def secret(name: str) -> str:
    """The value of a declared secret. Prefer ``secret_headers`` in :func:`fetch`: they keep
    the value out of the plugin. ``invalid-config`` (``undeclared: NAME`` / ``missing: NAME``)."""
    from componentize_py_types import Err
    from wit_world.imports import secrets

    try:
        return secrets.get(name)
    except Err as e:
        kind = type(e.value).__name__.removeprefix("SecretError_").lower()
        raise ConnectorError("invalid-config", f"{kind}: {e.value.value}") from None


_LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level: str, message: str, **fields: Any) -> None:
    """A structured log line attached to the current run (``trace``, ``debug``, ``info``,
    ``warn``, ``error``). Never log a credential."""
    from wit_world.imports import log as raw

    if level not in _LEVELS:
        raise ValueError(f"unknown level {level!r}")
    raw.log(getattr(raw.Level, level.upper()), message, [(k, str(v)) for k, v in fields.items()])


def now_ms() -> int:
    """The host's wall clock, milliseconds since the Unix epoch (world 0.2.0 ``clock.now``;
    with a world without it, Python's own clock through WASI)."""
    try:
        from wit_world.imports import clock  # type: ignore[attr-defined]
    except ImportError:
        import time

        return int(time.time() * 1000)
    return clock.now()


def clamp_to_now(value: str, subject: str) -> str:
    """``value`` (an RFC 3339 date-time, the newest ``updated_at`` seen), or the host's clock
    now (``YYYY-MM-DDTHH:MM:SSZ``) when ``value`` is later.

    An incremental cursor taken from upstream data must not pass the present: one record dated
    in the future (a broken clock, a hostile answer) would move the cursor past every record
    written until then, and each later run would skip them while succeeding. Held at now, the
    future record is only read again. Logs a warning naming ``subject`` when it clamps; a value
    that does not parse is returned as it is. The Rust SDK's ``time::clamp_to_now`` does the same.
    (``datetime`` is imported at the top: componentize-py bundles only what the module imports.)"""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return value
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    now = datetime.fromtimestamp(now_ms() // 1000, tz=timezone.utc)
    if at <= now:
        return value
    log("warn", "a cursor value from the upstream is in the future; held at the host's clock",
        subject=subject, value=value)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
