"""Chat conversations that wait for the user's profile instead of failing on its foreign key."""

from chat.errors import InvalidUserIdError, ProfileNotReadyError, UnknownUserError
from chat.model import Conversation
from chat.service import ChatService

__all__ = ["ChatService", "Conversation", "InvalidUserIdError", "ProfileNotReadyError", "UnknownUserError"]
