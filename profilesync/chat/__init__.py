"""Server-side inserts that wait for the user's profile instead of failing on its foreign key: ProfileGate for
any table referencing the profile, ChatService for the seed's conversations."""

from profilesync.chat.errors import InvalidUserIdError, ProfileNotReadyError, UnknownUserError
from profilesync.chat.gate import ProfileGate
from profilesync.chat.model import Conversation
from profilesync.chat.service import ChatService

__all__ = [
    "ChatService",
    "Conversation",
    "InvalidUserIdError",
    "ProfileGate",
    "ProfileNotReadyError",
    "UnknownUserError",
]
