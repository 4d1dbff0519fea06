"""One exception family for every error a user can cause, and how each maps to an exit code.

Library code raises these; the CLI (``scclip_cli.cli.app``) turns them into one clear line on stderr
and the exit code below, never a traceback. Anything *not* derived from :class:`ScclipError` is a bug.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # a batch run finished but some inputs failed (listed in failures.jsonl)
EXIT_USAGE = 2  # usage / configuration error found before any work was done
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped by a scheduler (or kill)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run stops exactly as on Ctrl-C (a ``KeyboardInterrupt``), and the
    CLI exits with :data:`EXIT_TERMINATED` instead of :data:`EXIT_INTERRUPTED`."""


class ScclipError(Exception):
    """Base of every error a user can cause. ``str(err)`` is the message shown to the user."""

    exit_code: int = EXIT_USAGE


class UsageError(ScclipError):
    """Bad command-line combination or option value."""


class ConfigError(ScclipError):
    """Invalid method / protocol configuration (unknown preset, depth without a preset, ...)."""


class ModelLoadError(ScclipError):
    """Unknown model, missing or unreadable weights, unsupported vision tower."""


class VocabularyError(ScclipError):
    """Empty, malformed or undecodable vocabulary file; mismatched embedding cache."""


class InputError(ScclipError):
    """No inputs, unreadable input paths, output collisions."""


class ImageReadError(ScclipError):
    """One image could not be decoded (corrupt, truncated, not an image, too large).

    Batch commands record these per image in ``failures.jsonl`` and carry on.
    """

    exit_code = EXIT_SOME_FAILED


class EvaluationError(ScclipError):
    """Missing or mismatched prediction / ground-truth files, label values out of range."""


class DatasetLayoutError(ScclipError):
    """A ``--dataset`` root that does not have the expected benchmark layout."""


class ExportError(ScclipError):
    """A folder that cannot be exported (not a segment output, incomplete or mismatched files),
    or an export target that is already there."""
