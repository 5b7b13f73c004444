"""How the operator proves who it is: an Authorization header made fresh for each request,
and the TLS context (CA, client certificate, the server's name) of every connection.

Both of the operator's connections (its own API layer in kube.py, and Kopf's, through the
login handler) are aiohttp sessions with the `authorizing` middleware: it sets the header
on each request and, after a 401, refreshes the credentials and retries once. Their pools
close the connections made before a new client certificate was loaded (`_Pool`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import errno
import ipaddress
import logging
import os
import ssl
import tempfile
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

TOKEN_PERIOD = 60.0  # re-read a token file at least this often (seconds), as client-go

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """No usable cluster credentials: one line that says what is wrong."""


class Authorization(Protocol):
    """The Authorization header's value, made fresh when it is asked for."""

    async def header(self) -> str | None:
        """The value for the next request; None: no header (a client certificate)."""

    def generation(self) -> int:
        """Which credentials the last `header()` came from, counted up as they change:
        what a 401 names them by, as a client certificate has no header to compare."""

    async def refresh(self, failed: int) -> bool:
        """The API server answered 401 to the credentials of generation `failed`: get
        others if there is a way. True if there are newer ones now (worth a retry)."""

    def expires(self) -> datetime.datetime | None:
        """When the current header stops being valid, if that is known."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""
    server: str  # e.g. https://10.0.0.1:443, no trailing slash
    ssl: ssl.SSLContext  # the CA, the client certificate if any, the server's name
    auth: Authorization
    proxy: str | None = None
    namespace: str | None = None  # the kubeconfig context's, else the Pod's
    source: str = "the credentials"  # for messages: which kubeconfig, context and user

    async def check(self) -> None:
        """Fail now, with one line, if no Authorization can be made (a plugin that is
        missing or fails): never start as anonymous."""
        try:
            await self.auth.header()
        except ConfigError as error:
            raise ConfigError(f"Cannot use {self.source}: {error}") from error


def authorizing(auth: Authorization) -> ClientMiddlewareType:
    """An aiohttp client middleware: a fresh Authorization on every request, and one
    retry after a 401 if the credentials could be refreshed (a token file rewritten, an
    exec plugin run again). A 401 that nothing fixes is returned to the caller."""
    async def middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        try:
            for retry in (True, False):
                header = await auth.header()
                sent = auth.generation()  # no await between: the credentials of `header`
                if header is not None:
                    request.headers["Authorization"] = header
                response = await handler(request)
                if response.status != 401 or not retry or not await auth.refresh(sent):
                    return response
                response.release()
        except ConfigError as error:  # checked at start: it worked then, so retry later
            raise CredentialsUnavailable(f"No credentials: {error}") from error
        raise AssertionError("unreachable")
    return middleware


class CredentialsUnavailable(aiohttp.ClientConnectionError):
    """Credentials that worked at start fail now (e.g. an exec plugin whose login session
    expired): a request that cannot be made yet, retried and logged like an unreachable
    API server by both connections, until the user logs in again."""


def environment_proxy(server: str) -> str | None:
    """The proxy the environment names for the API server at `server` (HTTPS_PROXY or
    HTTP_PROXY by its scheme, unless NO_PROXY exempts its host), read once.

    aiohttp's `trust_env` reads them, and `~/.netrc`, again for every request, in an
    executor thread: in a burst of claims that was 28.6 % of the operator's busy time
    (docs/benchmarks.md). The server never changes, so neither does its proxy."""
    parts = urllib.parse.urlsplit(server)
    host = parts.hostname
    if host and (urllib.request.proxy_bypass(host) or _in_no_proxy_range(host)):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


def _in_no_proxy_range(host: str) -> bool:
    """Whether NO_PROXY lists a range (10.96.0.0/12, fd00::/8) that holds the IP address
    `host`. Go's and client-go's proxy rules read ranges, Python's proxy_bypass does not,
    and the in-cluster API server is often exempted by its Service range alone."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: proxy_bypass has judged it
    for entry in urllib.request.getproxies_environment().get("no", "").split(","):
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue  # a name, a port, or nothing
        if network.version == address.version and address in network:
            return True
    return False


# How many client certificates each TLS context has had loaded: a connection made before
# the last one presents an older one (see _Pool).
_certificates: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()


class _Pool(aiohttp.TCPConnector):
    """A pool whose connections present the TLS context's latest client certificate.

    An exec plugin's certificate rotates in the shared context, but a keep-alive
    connection keeps the one of its handshake, and the API server answers 401 to every
    request on it. So a connection made before the latest certificate was loaded is
    closed when it would be reused, and another one made. (client-go closes them all at
    once; here a request or watch under way on one is left to end.)"""

    def __init__(self, *, ssl: ssl.SSLContext, limit: int) -> None:
        super().__init__(limit=limit, ssl=ssl)
        self._context = ssl
        self._made: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()

    async def connect(self, req: ClientRequest, traces: list[Trace],
                      timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's name)
                      ) -> Connection:
        while True:
            loaded = _certificates.get(self._context, 0)
            connection = await super().connect(req, traces, timeout)
            # A new connection counts as made with the certificate loaded before it
            # began (if another came meanwhile, it is made again: a handshake lost).
            made = self._made.setdefault(connection.protocol, loaded)
            if made == _certificates.get(self._context, 0):
                return connection
            connection.close()


def session(credentials: Credentials, *, limit: int,
            **options: Any) -> aiohttp.ClientSession:
    """An aiohttp session to the API server that authenticates every request; through
    the kubeconfig's proxy, else the environment's (HTTPS_PROXY, NO_PROXY)."""
    return aiohttp.ClientSession(
        connector=_Pool(limit=limit, ssl=credentials.ssl),
        middlewares=(authorizing(credentials.auth),),
        proxy=credentials.proxy or environment_proxy(credentials.server),
        trust_env=False, **options)


class Static:
    """A header that never changes: a bearer `token`, or `username`/`password`."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    async def header(self) -> str | None:
        return self.value

    def generation(self) -> int:
        return 0

    async def refresh(self, failed: int) -> bool:
        return False  # nothing else to offer: the 401 stands

    def expires(self) -> datetime.datetime | None:
        return None

    @classmethod
    def basic(cls, username: str, password: str) -> Static:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        return cls(f"Basic {pair}")


class TokenFile:
    """A bearer token in a file that is rewritten: projected ServiceAccount tokens rotate
    (about hourly) and a kubeconfig's `tokenFile` may too. The file is read again once it
    changed, at least every `period` seconds, and at once after a 401. `inline`: a token
    to use until the file can be read (a kubeconfig's `token` beside its `tokenFile`, as
    client-go does)."""

    def __init__(self, path: Path, *, period: float = TOKEN_PERIOD,
                 clock: Callable[[], float] = time.monotonic,
                 inline: str | None = None) -> None:
        self.path = path
        self.period = period
        self.clock = clock
        self._token: str | None = inline
        self._read = False  # once the file was read
        self._read_at = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._generation = 0  # counts the different tokens read

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()  # follows the kubelet's ..data symlink swap
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def token(self, *, now: bool = False) -> str:
        clock, stamp = self.clock(), self._file_stamp()
        if (now or self._token is None or stamp != self._stamp
                or clock - self._read_at >= self.period):
            try:
                token = self.path.read_text(encoding="utf-8").strip()
                if not token:  # being written, or never: no token (as client-go)
                    raise OSError(errno.ENODATA, "it is empty")
            except OSError as error:
                if self._token is None:
                    raise
                log.warning("Could not read the token %s (%s); keeping %s.", self.path,
                            error.strerror or error,
                            "the last one read" if self._read else "the kubeconfig's token")
            else:
                self._read = True
                if token != self._token:
                    self._token, self._generation = token, self._generation + 1
            self._read_at, self._stamp = clock, stamp
        return self._token

    async def header(self) -> str | None:
        return f"Bearer {self.token()}"

    def generation(self) -> int:
        return self._generation

    async def refresh(self, failed: int) -> bool:
        self.token(now=True)
        return self._generation != failed

    def expires(self) -> datetime.datetime | None:
        return None


class _NamedContext(ssl.SSLContext):
    """An SSL context that checks the server's certificate against a fixed name (the
    cluster's `tls-server-name`) whatever host the connection goes to."""

    server_name: str | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: Any = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side,
                                self.server_name or server_hostname, session)


def tls_context(*, ca_file: str | None = None, ca_data: str | None = None,
                insecure: bool = False, server_name: str | None = None) -> ssl.SSLContext:
    """Verifies the server against the CA (the system's if none is given)."""
    context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    if ca_file or ca_data:
        context.load_verify_locations(cafile=ca_file, cadata=ca_data)
    else:
        context.load_default_certs()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.contextmanager
def _private_file(data: bytes | None, path: str | None) -> Iterator[str | None]:
    """`path` itself, or `data` in a private temporary file only while it is loaded
    (Python's ssl loads certificates and keys from files only)."""
    if data is None:
        yield path
        return
    descriptor, name = tempfile.mkstemp(prefix="evc-operator-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        yield name
    finally:
        os.unlink(name)


def load_client_certificate(context: ssl.SSLContext, *, cert_data: bytes | None = None,
                            cert_file: str | None = None, key_data: bytes | None = None,
                            key_file: str | None = None) -> None:
    """Present this client certificate on the context's next connections."""
    with _private_file(cert_data, cert_file) as cert, _private_file(key_data, key_file) as key:
        assert cert is not None
        context.load_cert_chain(certfile=cert, keyfile=key)
    _certificates[context] = _certificates.get(context, 0) + 1
