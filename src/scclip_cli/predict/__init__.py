"""One image to labels: :class:`~scclip_cli.predict.segmenter.Segmenter` puts the model and
the maps together. Imports ``model`` and below."""
