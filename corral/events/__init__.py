"""Events: the one record of what happened, and the one recorder that writes it."""
