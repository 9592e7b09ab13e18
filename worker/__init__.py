"""The jobqueue worker daemon: one per GPU host."""
