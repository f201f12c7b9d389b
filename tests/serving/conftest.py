"""The serving tests' fixtures, defined in serving_support.py with the helpers the tests import
(``from serving_support import ...``: a name of its own, where ``conftest`` would be whichever
test folder's conftest was imported first)."""

from serving_support import class_images, serve_url, served_registry, start_server

__all__ = ["class_images", "serve_url", "served_registry", "start_server"]
