"""Storage and tracking URLs as they may be shown or stored: with the password masked."""

from __future__ import annotations


def hide_password(url: str) -> str:
    """A database URL safe to print or log: the password is masked."""
    # SQLAlchemy loads here, not with the module: the CLI imports this for --help too.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL (a path, an http URI): nothing to hide
        return url
