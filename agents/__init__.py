"""loopdrive planners."""
