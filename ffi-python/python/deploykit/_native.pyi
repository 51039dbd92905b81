"""Type stubs of deploykit's native module (built from ffi-python/src by maturin)."""

from __future__ import annotations

import builtins
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, Union

__all__ = [
    "__version__",
    "Error",
    "ConnectionError",
    "RefusedError",
    "ReceiptLostError",
    "TimeoutError",
    "ProtocolError",
    "BrokerError",
    "ClosedError",
    "UrlError",
    "InvalidRequestError",
    "MessageError",
    "GitError",
    "SvnError",
    "SpoolError",
    "Client",
    "Subscription",
    "Message",
    "Spool",
    "read_git_push",
    "read_svn_commit",
    "git_config",
    "repo_name",
    "decode",
]

__version__: str
"""The deploykit version (the Cargo workspace's)."""

StrPath = Union[str, "PathLike[str]"]
Body = Union[bytes, str]
Destinations = Union[str, Mapping[str, Optional[str]], None]
"""``"default"``, ``"legacy"`` (the future.* topics) or a dict of ``commits``, ``builds``,
``builds_failed``, ``packages``, ``events`` (``{source}`` is replaced), ``agents``, ``deploy``."""

class Error(Exception):
    """Base class of every deploykit error."""

class ConnectionError(Error, builtins.ConnectionError):
    """No broker could be reached, or the connection was lost. Also the built-in
    ``ConnectionError`` (an ``OSError``): ``except ConnectionError`` catches it."""

class RefusedError(ConnectionError):
    """The broker refused the session: bad login or passcode, unknown virtual host, unsupported STOMP version."""

class ReceiptLostError(ConnectionError):
    """The connection dropped before the broker's receipt arrived: the broker may or may not have the message."""

class TimeoutError(Error, builtins.TimeoutError):
    """Nothing answered in time (connect, receipt, or a bounded wait). Also the built-in
    ``TimeoutError`` (an ``OSError``): ``except TimeoutError`` catches it."""

class ProtocolError(Error):
    """The bytes on the wire were not valid STOMP, or a frame could not be encoded."""

class BrokerError(ProtocolError):
    """The broker sent an ERROR frame on an open session."""

class ClosedError(Error):
    """The client or subscription is closed."""

class UrlError(Error):
    """The broker URL is malformed."""

class InvalidRequestError(Error):
    """The request makes no sense in this state or STOMP version (e.g. NACK on STOMP 1.0)."""

class MessageError(Error):
    """A message could not be encoded or decoded (unknown dk-version, broken JSON, missing field)."""

class GitError(Error):
    """A git repository could not be read, or a ref name / revision is invalid."""

class SvnError(Error):
    """A Subversion commit could not be read with svnlook."""

class SpoolError(Error):
    """The message spool directory could not be read or written."""

class Message:
    """A message received from the bus."""

    @property
    def destination(self) -> str:
        """Where the message was sent."""
    @property
    def headers(self) -> Dict[str, str]:
        """All headers (the first of repeated headers wins, as STOMP says)."""
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """One header, or ``default``."""
    @property
    def body(self) -> bytes:
        """The body."""
    @property
    def text(self) -> Optional[str]:
        """The body as text, or None if it is not UTF-8."""
    @property
    def message_id(self) -> Optional[str]:
        """The broker's ``message-id`` header."""
    @property
    def is_keepalive(self) -> bool:
        """Whether this is the original deploykit's keepalive (a body of one newline)."""
    @property
    def kind(self) -> Optional[str]:
        """``"commit"``, ``"build"``, ``"package"``, ``"event"``, ``"deploy-request"``,
        ``"deploy-reply"``, ``"agent-announce"`` or ``"keepalive"`` (JSON or legacy);
        None if it is not a deploykit message."""
    def decoded(self) -> Optional[Dict[str, Any]]:
        """The message decoded by core (JSON v1 or any legacy body) as a dict of its
        fields plus ``"kind"`` (``"commit"``, ``"build"``, …); None for a keepalive. Raises :class:`MessageError` (naming the
        destination and message id) for anything else."""

class Subscription:
    """A subscription: iterate it for :class:`Message` objects (blocking with the GIL
    released, Ctrl-C honoured); iteration ends when it or its client is closed."""

    @property
    def destination(self) -> str:
        """The destination subscribed to."""
    def next_message(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, waiting at most ``timeout`` seconds (forever if None);
        None on timeout. Raises :class:`ClosedError` once closed."""
    def __iter__(self) -> Iterator[Message]: ...
    def __next__(self) -> Message: ...
    def ack(self, message: Message) -> None:
        """Acknowledges ``message`` (``ack="client"`` or ``"client-individual"``)."""
    def nack(self, message: Message) -> None:
        """Rejects ``message`` (client ack modes, STOMP 1.1+)."""
    def close(self) -> None:
        """Unsubscribes (waiting for the broker's receipt). Idempotent."""
    def __enter__(self) -> Subscription: ...
    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

class Client:
    """A connection to a STOMP broker (embedded dk-broker, RabbitMQ, ActiveMQ).

    Connects at once; raises :class:`ConnectionError` (or :class:`UrlError`,
    :class:`RefusedError`) if it cannot. ``url`` is ``stomp://[user:pass@]host:port``,
    ``stomp+ssl://…`` or ``failover:(stomp://a:61613,stomp://b:61613)?options``.
    ``timeout`` (seconds) bounds the whole connect (shared among
    ``connect_attempts`` attempts) and every receipt wait. Once connected the client
    heart-beats and reconnects by itself. Thread-safe; a context manager.
    """

    def __init__(
        self,
        url: str,
        *,
        vhost: str = "/",
        login: Optional[str] = None,
        passcode: Optional[str] = None,
        heartbeat_ms: int = 10000,
        timeout: float = 10.0,
        connect_attempts: int = 3,
    ) -> None: ...
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
    def send(
        self,
        destination: str,
        body: Body,
        headers: Optional[Mapping[str, str]] = None,
        receipt: bool = False,
        *,
        persistent: bool = False,
    ) -> None:
        """Sends ``body`` (bytes, or str sent as UTF-8) with extra ``headers``; with
        ``receipt=True`` waits until the broker confirms it."""
    def send_many(
        self,
        destination: str,
        bodies: Iterable[Body],
        headers: Optional[Mapping[str, str]] = None,
        receipt: bool = False,
        *,
        persistent: bool = False,
    ) -> None:
        """Sends each of ``bodies`` in order with the same ``headers`` (one call for many
        messages); with ``receipt=True`` waits until the broker confirms the last."""
    def subscribe(
        self,
        destination: str,
        ack: str = "auto",
        *,
        prefetch: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Subscription:
        """Subscribes; ``ack`` is ``"auto"``, ``"client"`` or ``"client-individual"``."""
    def publish_commit(
        self,
        repo: str,
        oldrev: str,
        newrev: str,
        refname: str,
        *,
        source: str = "git",
        commits: Optional[List[Mapping[str, str]]] = None,
        correlation_id: Optional[str] = None,
        wire: str = "json",
        destinations: Destinations = None,
        svn: Optional[Mapping[str, Any]] = None,
        event_source: Optional[str] = None,
    ) -> None:
        """Publishes a commit message and its event line. ``source`` is ``git``, ``svn``,
        ``github``, ``gitlab`` or ``gitea``; ``commits`` are dicts with ``id``,
        ``author``, ``timestamp``, ``message`` (newest first); ``correlation_id``
        defaults to ``newrev``; ``wire`` is ``"json"`` or ``"legacy"``; ``svn`` is
        ``{"revision": N, "project": …, "dirs": […]}`` for an SVN commit."""
    def publish_build(
        self,
        job: str,
        number: int,
        status: str,
        *,
        url: Optional[str] = None,
        repo: Optional[str] = None,
        branch: Optional[str] = None,
        commit: Optional[str] = None,
        duration_ms: Optional[int] = None,
        correlation_id: Optional[str] = None,
        wire: str = "json",
        destinations: Destinations = None,
        event_source: str = "jenkins",
    ) -> None:
        """Publishes a build message (``status``: started, success, failure, unstable,
        aborted) and its event line."""
    def publish_event(
        self,
        text: str,
        *,
        source: str = "python",
        correlation_id: Optional[str] = None,
        wire: str = "json",
        destinations: Destinations = None,
    ) -> None:
        """Publishes a one-line event from daemon ``source``."""
    def close(self) -> None:
        """Disconnects. Idempotent; later calls raise :class:`ClosedError`."""
    def __enter__(self) -> Client: ...
    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

class Spool:
    """A directory (mode 0700) of messages waiting to be sent: written first, then
    drained oldest first, each deleted only after the broker's receipt."""

    def __init__(self, dir: StrPath) -> None: ...
    @property
    def dir(self) -> Path:
        """The spool directory."""
    @property
    def bad_dir(self) -> Path:
        """Where unreadable files are moved."""
    def push(self, destination: str, body: Body, headers: Optional[Mapping[str, str]] = None) -> Path:
        """Spools one message (atomically); returns its file."""
    def push_commit(
        self, commit: Mapping[str, Any], *, source: str = "git-hook", wire: str = "json", destinations: Destinations = None
    ) -> List[Path]:
        """Spools a commit and its event line as :meth:`Client.publish_commit` sends them."""
    def pending(self) -> List[Path]:
        """The spooled messages' files, oldest first."""
    @staticmethod
    def read(path: StrPath) -> Tuple[str, Dict[str, str], bytes]:
        """Reads one spooled file back as ``(destination, headers, body)``."""
    def drain(self, client: Client, timeout: Optional[float] = None) -> int:
        """Sends every spooled message, oldest first, with receipts; returns how many
        were sent. Stops at the first bus failure (raising its exception) or after
        ``timeout`` seconds (:class:`TimeoutError`); what is left stays spooled."""

def read_git_push(repo: StrPath, oldrev: str, newrev: str, refname: str, max_commits: int = 50) -> List[Dict[str, str]]:
    """The commits a push brought (``id``, ``author``, ``timestamp``, ``message``), newest
    first: new branch → commits no other branch has; deletion → none; tag → the
    tagged commit. Raises :class:`GitError` for invalid ref names or revisions."""

def read_svn_commit(repos: StrPath, rev: int, repo_name: str, svnlook: StrPath = "svnlook") -> Dict[str, Any]:
    """Revision ``rev`` read with svnlook (argument vector) as a commit dict, with the
    legacy ``Project`` rule in ``svn["project"]``. Raises :class:`SvnError`."""

def git_config(repo: StrPath, key: str) -> Optional[str]:
    """A ``deploykit.*`` git configuration value (repository, user, system), or None."""

def repo_name(path: StrPath) -> str:
    """The directory name without ``.git`` (``/srv/git/site.git`` → ``site``)."""

def decode(destination: str, headers: Optional[Mapping[str, str]], body: Body) -> Tuple[str, Optional[Dict[str, Any]]]:
    """Decodes a message (JSON v1 or legacy) as every deploykit tool does: ``(kind, fields)``."""
