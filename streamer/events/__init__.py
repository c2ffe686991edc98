"""streamer.events."""
