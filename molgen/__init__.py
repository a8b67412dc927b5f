"""molgen: molecule generation with a hyperspherical (spherical Cauchy) variational autoencoder."""

__version__ = "0.1.0"
