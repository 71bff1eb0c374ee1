"""loopdrive simulator core."""
