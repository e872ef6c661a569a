"""Tracking URIs as mednas uses, records and shows them: local stores made absolute, credentials kept out.

A URI may carry credentials (``https://user:secret@host``). They are taken out of the URI MLflow sees and passed
the way MLflow reads them (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, see :mod:`mednas.tracking._tracker`), so
they never reach a log line, an error message, ``resolved.yaml`` or a run's tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from mednas.io._scrub import redact_in_text, redact_url

__all__ = ["ParsedUri", "is_http", "normalize_uri", "parse_uri", "public_uri", "redact_reason"]


class ParsedUri(NamedTuple):
    """A tracking URI split for use: what MLflow is given, and the credentials that were in it."""

    uri: str
    username: str | None
    password: str | None


def is_http(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (``http://`` or ``https://``)."""
    return uri.lower().startswith(("http://", "https://"))


def normalize_uri(uri: str) -> str:
    """Return ``uri`` with a local store's path made absolute (it is recorded, and read from other folders later).

    A plain path and ``file:`` become ``file:///ABS``; ``sqlite:///relative.db`` becomes ``sqlite:////ABS``;
    anything else is returned unchanged.

    Example:
        >>> normalize_uri("http://mlflow.example.org:5000")
        'http://mlflow.example.org:5000'
    """
    uri = uri.strip()
    lower = uri.lower()
    if lower.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :]
        return uri if rest.startswith("/") or not rest else f"sqlite:///{Path(rest).expanduser().resolve()}"
    if lower.startswith("file:"):
        rest = uri[len("file:") :]
        path = urlsplit(uri).path if rest.startswith("//") else rest
        return Path(unquote(path)).expanduser().resolve().as_uri()
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def parse_uri(uri: str) -> ParsedUri:
    """Split the credentials out of a tracking server's URI (``http(s)://user:secret@host``).

    Other URIs (a database URL's password belongs to its driver) are returned whole.

    Example:
        >>> parse_uri("https://ana:s3cret@mlflow.example.org/")
        ParsedUri(uri='https://mlflow.example.org/', username='ana', password='s3cret')
    """
    if not is_http(uri):
        return ParsedUri(uri, None, None)
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return ParsedUri(uri, None, None)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return ParsedUri(clean, unquote(user) or None, unquote(password) or None)


def public_uri(uri: str) -> str:
    """The URI as mednas shows and records it: a server's without its credentials, any other's password masked.

    Example:
        >>> public_uri("http://ana:s3cret@127.0.0.1:5000")
        'http://127.0.0.1:5000'
        >>> public_uri("postgresql://ana:s3cret@db/mlflow")
        'postgresql://ana:***@db/mlflow'
    """
    parsed = parse_uri(normalize_uri(uri))
    return redact_url(parsed.uri)


def redact_reason(text: str, uri: str) -> str:
    """One line of ``text`` (an exception's message) with ``uri``'s credentials masked, at most 300 characters."""
    line = " ".join(str(text).split()).replace(uri, public_uri(uri))
    password = parse_uri(uri).password
    if password:
        line = line.replace(password, "***")
    line = redact_in_text(line, uri)
    return line if len(line) <= 300 else line[:297] + "..."
