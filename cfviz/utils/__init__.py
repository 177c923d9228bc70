"""Small helpers shared across cfviz: atomic file writes, seeding, library versions."""
