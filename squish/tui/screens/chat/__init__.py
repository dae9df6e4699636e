"""The chat screen, in parts: screen.py (conversation, prompt, turns, chats), model.py (loading,
switching and pulling models, memory readings), agent.py (agent mode), slash.py (slash commands).

Each part is a mixin of `ChatScreen`; they share the screen's state and run on the Textual event
loop, except the methods marked as thread workers, which only read engine event streams and
post messages (squish/tui/messages.py).
"""

from .screen import ChatScreen

__all__ = ["ChatScreen"]
