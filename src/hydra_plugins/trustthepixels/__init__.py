"""TrustThePixels Hydra plugins, found by Hydra's plugin scan."""
