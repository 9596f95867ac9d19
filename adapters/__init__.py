"""The platform room: translate platform updates into core events and replies back into platform calls.

This room is also the outer edge of the process (terminal, signals, configuration file), so the
command line that wires core, bots and the adapters together lives here as well.
"""
