"""Serving registered models over HTTP (``visionops serve``)."""
