"""The FastAPI adapter: connector JSON in, Triton requests out, and back (DESIGN.md §4)."""
