"""merge use case."""
