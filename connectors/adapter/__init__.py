"""The FastAPI adapter: connector JSON in, Triton requests out, and back (docs/design.md#the-adapter)."""
