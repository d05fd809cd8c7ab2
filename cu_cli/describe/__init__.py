"""``cu inspect``: what a state, basis or base is."""
