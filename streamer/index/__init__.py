"""streamer.index."""
