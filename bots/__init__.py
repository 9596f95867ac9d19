"""The model room: talks to an OpenAI-compatible server and knows nothing about chats."""
