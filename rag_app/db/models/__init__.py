"""SQLModel tables. Importing this package registers every table on ``SQLModel.metadata``."""

from rag_app.db.models.apikey import ApiKey
from rag_app.db.models.chat_history import ChatHistory
from rag_app.db.models.document import Document
from rag_app.db.models.knowledge import Knowledge
from rag_app.db.models.llm import Llm
from rag_app.db.models.recall_test import RecallTest
from rag_app.db.models.robot import Robot, RobotKnowledge
from rag_app.db.models.robot_token import RobotToken
from rag_app.db.models.session import ChatSession
from rag_app.db.models.user import User

__all__ = [
    "ApiKey",
    "ChatHistory",
    "ChatSession",
    "Document",
    "Knowledge",
    "Llm",
    "RecallTest",
    "Robot",
    "RobotKnowledge",
    "RobotToken",
    "User",
]
