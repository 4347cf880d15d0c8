"""secret-init: fetch a container's secrets onto tmpfs, then start its application."""

__version__ = "0.1.0"
