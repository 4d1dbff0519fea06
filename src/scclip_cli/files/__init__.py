"""Formats read and written: images, label PNGs, palettes, vocabularies, prompt templates,
benchmark folder layouts, atomic writes. Imports only ``scclip_cli.config`` / ``errors``."""
