"""``cu sample``: images of states (and the base) for prompts × seeds, as a grid or single PNGs."""
