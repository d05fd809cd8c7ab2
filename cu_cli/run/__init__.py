"""``cu run``: a whole unlearning study from one YAML file (orchestrates erase, merge, eval, drift)."""
