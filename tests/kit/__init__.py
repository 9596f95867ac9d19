"""Building blocks for engine-level tests: a recording reply channel and an engine wired to fakes."""
