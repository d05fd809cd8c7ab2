"""Built-in worlds: procedural data and concept lists (numpy/PIL only, no torch)."""
