"""edgevlm: compact vision-language models on phones and edge boards.

Load a local Hugging Face checkpoint with :func:`edgevlm.models.load`, generate with
:mod:`edgevlm.generate`, and use the ``edgevlm`` command line for the rest.
"""

__version__ = "0.1.0"


def load(path, backend: str = "native", **options):
    """Open a bundle (or a model directory, for ``backend="torch"``) as a session: see :mod:`edgevlm.sdk`."""
    from .sdk import load as _load

    return _load(path, backend, **options)
