"""URLs in the config that may hold a password (``http://user:pw@host``): shown as ``***``.

>>> redact_url("http://ops:s3cret@mlflow:5000")
'http://ops:***@mlflow:5000'
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (``http://u:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its user info, and the user name and password it held (None: not
    given; a password shown as ``***`` by ``redact_url`` counts as not given).

    Decoded as ``requests`` decodes them when it logs in with a URL's user info, so
    ``p%40ss`` is the password ``p@ss``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    user_info, _, host = parts.netloc.rpartition("@")
    user, has_password, password = user_info.partition(":")
    shown = unquote(password) if has_password and password != REDACTED else None
    return parts._replace(netloc=host).geturl(), unquote(user) or None, shown


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an http:// or https:// URL with a host (and a valid port, if any)."""
    parts = urlsplit(url)
    try:
        port = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0
