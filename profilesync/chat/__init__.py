"""Chat conversations that wait for the user's profile instead of failing on its foreign key."""

from profilesync.chat.errors import InvalidUserIdError, ProfileNotReadyError, UnknownUserError
from profilesync.chat.model import Conversation
from profilesync.chat.service import ChatService

__all__ = ["ChatService", "Conversation", "InvalidUserIdError", "ProfileNotReadyError", "UnknownUserError"]
