"""Storage and tracking URLs as they may be shown or stored: with the password masked."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def hide_password(url: str) -> str:
    """A database URL safe to print or log: the password is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL (a path, an http URI): nothing to hide
        return url
