"""ML Lab's shared library: one subpackage per concept (docs/architecture.md, layers), no cloud client
imported at import time."""
