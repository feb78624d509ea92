"""Storage and tracking URLs as they may be shown or stored: with the password masked, or left
out where the URL must still work."""

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


def without_password(url: str) -> str:
    """A storage or tracking URL with its password left out, not masked: it may be printed or
    written to a file, and still reaches its database, whose client then reads the password
    where it keeps them (PGPASSWORD or ~/.pgpass for PostgreSQL, MLFLOW_TRACKING_PASSWORD for an
    MLflow server)."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:  # not a database URL (a path, a journal file): no password in it
        return url
    if parsed.password is None:
        return url
    without = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query)
    return without.render_as_string(hide_password=False)
