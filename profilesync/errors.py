"""One exception base class; each subclass's docstring is its message."""

from __future__ import annotations


class ProfileSyncError(Exception):
    """profilesync failed."""

    def __init__(self, detail: str = "") -> None:
        message = (self.__doc__ or "").strip().rstrip(".")
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail


class ConfigError(ProfileSyncError):
    """Invalid configuration."""


class MigrationError(ProfileSyncError):
    """Could not apply the SQL migrations."""


class InsufficientPrivilegeError(ProfileSyncError):
    """The database role lacks a privilege (SQLSTATE 42501): run as the documented role or grant it."""


class SchemaMissingError(ProfileSyncError):
    """schema profile_sync missing: run profilesync migrate."""
