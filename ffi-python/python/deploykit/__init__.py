"""deploykit for Python: publish and receive deploykit messages over STOMP.

A thin layer over the deploykit Rust core (the private extension module
``deploykit._native``): the same client, message schemas (JSON v1 and the
legacy future-deploykit text bodies), git/SVN readers and spool that the
``dk-*`` tools use.

- :class:`Client` connects to a broker and publishes commits, builds and event
  lines, sends raw messages and subscribes (:class:`Subscription` yields
  :class:`Message` objects).
- :func:`read_git_push`, :func:`read_svn_commit`, :func:`git_config`,
  :func:`repo_name` and :class:`Spool` are what the hooks in
  :mod:`deploykit.hooks` are made of (``python -m deploykit.hooks --help``).
- Every error is a :class:`Error` subclass; :class:`ConnectionError` and
  :class:`TimeoutError` are also Python's built-in ``ConnectionError`` and
  ``TimeoutError``, so ``except TimeoutError:`` catches a timed-out connect too.

Blocking calls release the GIL; waiting on a subscription checks for signals
every 100 ms, so Ctrl-C interrupts it.
"""

from ._native import (
    BrokerError,
    Client,
    ClosedError,
    ConnectionError,
    Error,
    GitError,
    InvalidRequestError,
    Message,
    MessageError,
    ProtocolError,
    ReceiptLostError,
    RefusedError,
    Spool,
    SpoolError,
    Subscription,
    SvnError,
    TimeoutError,
    UrlError,
    __version__,
    decode,
    git_config,
    read_git_push,
    read_svn_commit,
    repo_name,
)

#: The all-zero object id git uses for "no commit" (branch creation or deletion).
ZERO_REV = "0" * 40

__all__ = [
    "BrokerError",
    "Client",
    "ClosedError",
    "ConnectionError",
    "Error",
    "GitError",
    "InvalidRequestError",
    "Message",
    "MessageError",
    "ProtocolError",
    "ReceiptLostError",
    "RefusedError",
    "Spool",
    "SpoolError",
    "Subscription",
    "SvnError",
    "TimeoutError",
    "UrlError",
    "ZERO_REV",
    "__version__",
    "decode",
    "git_config",
    "read_git_push",
    "read_svn_commit",
    "repo_name",
]
