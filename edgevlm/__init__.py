"""edgevlm: compact vision-language models on phones and edge boards.

Load a local Hugging Face checkpoint with :func:`edgevlm.models.load`, generate with
:mod:`edgevlm.generate`, and use the ``edgevlm`` command line for the rest.
"""

__version__ = "0.1.0"


def load(path, backend: str = "native", **options):
    """Open a bundle (or a model directory, for ``backend="torch"``) as a session: see :mod:`edgevlm.sdk`."""
    from .sdk import load as _load

    return _load(path, backend, **options)


def open_model(path, backend: str = "native", **options):
    """Open a bundle as a model that sessions share (``model.session()``): see :mod:`edgevlm.sdk`."""
    from .sdk import open_model as _open_model

    return _open_model(path, backend, **options)
