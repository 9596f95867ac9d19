"""The platform room: one folder per platform, each translating its updates into core events and the
engine's replies into platform calls, plus ``kit.py``, what all of them share. Adapters decide
nothing about access, sessions, commands or budgets, and never import the shell."""
