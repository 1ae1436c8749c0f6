"""deforum-ray: distributed batch renderer for Deforum-style FLUX.1 animations on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deforum-ray")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
