"""TrustThePixels: train, evaluate and ship detectors of AI-generated images."""

from trustthepixels.config import register_resolvers

register_resolvers()

__version__ = "0.1.0"
