"""fixnet's version, in a module of its own (the .fxn writer records it; nothing to import)."""
__version__ = "0.1.0"
