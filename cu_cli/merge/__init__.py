"""``cu merge``: combine checkpoints of one base (uniform, task arithmetic, TIES); see compute.py."""
