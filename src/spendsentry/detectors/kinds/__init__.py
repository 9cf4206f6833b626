"""The alert kinds, one module each (``<kind>.py`` holds the class; see the registry)."""
