"""Pure torch functions on tensors / ``dict[str, Tensor]``; no I/O."""
