"""``python -m streamer`` entry point."""

from streamer.cli import main

if __name__ == "__main__":
    main()
