"""Fleet: many Plans at once (build matrices, matrix builds on this machine, CI workflows)."""
