"""Where searches are kept and how they are named: light enough for the serving process to
import at start (Optuna itself is imported by search_study.py when a search first needs it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from service.training.journal import JOURNAL_FILE

#: Studies this server made (other studies in a shared database are left alone).
STUDY_PREFIX = "paradigm-search-"
PRUNERS = ("median", "none", "threshold")


def storage_url(registry_url: str, data_dir: Path) -> str:
    """The study's database: the registry's PostgreSQL when shared, else the job journal's
    SQLite file."""
    if registry_url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + registry_url.split("://", 1)[1]
    return f"sqlite:///{data_dir / JOURNAL_FILE}"


def redacted(url: str) -> str:
    """The URL without its password, to show a client."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
