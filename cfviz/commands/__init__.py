"""Sub-commands of the ``cfviz`` command line, one module each (argument parsing only)."""
