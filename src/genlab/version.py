"""genlab's version, at the bottom of the import graph (modules inside genlab import it from here, never
from the package root, whose __init__ imports the whole API)."""

__version__ = "0.1.0"
