"""streamer.eval."""
