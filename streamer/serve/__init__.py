"""streamer.serve."""
