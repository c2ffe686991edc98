"""streamer.checks."""
