"""The engine room: platform-neutral events, the message pipeline, sessions, stores and rendering.

Nothing in here imports an adapter or a platform library; adapters depend on core, never the reverse.
"""
