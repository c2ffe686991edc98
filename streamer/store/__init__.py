"""streamer.store."""
