"""The ``scclip`` command line: thin Typer wrappers over the library functions."""
