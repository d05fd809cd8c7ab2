"""cu: continual unlearning for text-to-image diffusion models (package ``cu_cli``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cu_cli")
except PackageNotFoundError:  # source tree without install
    __version__ = "0+unknown"
