"""deforum-ray: distributed batch renderer for Deforum-style FLUX.1 animations on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deforum-ray")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def create_flux1_pipeline(*args, **kwargs):  # imported lazily: `import deforum_ray` stays light
    """See :func:`deforum_ray.api.create_flux1_pipeline`."""
    from .api import create_flux1_pipeline as create

    return create(*args, **kwargs)


__all__ = ["__version__", "create_flux1_pipeline"]
