"""The chat service's errors: what a caller can act on, never a raw database error.

No trailing period in the docstrings: the message continues with ": <detail>".
"""

from __future__ import annotations

from profilesync.errors import ProfileSyncError


class InvalidUserIdError(ProfileSyncError, ValueError):
    """Not a user id (expected a UUID)"""


class UnknownUserError(ProfileSyncError):
    """No such user (absent from auth.users, or deleted)"""


class ProfileNotReadyError(ProfileSyncError):
    """The user's profile was not created in time (retry later)"""
