"""The shell: the composition root that reads the configuration, builds the store, the model, the
engine and every enabled adapter, serves HTTP, and owns the process (signals, event loop, logging,
metrics). Imports run chatbridge -> adapters -> core -> bots; nothing below imports this room."""
