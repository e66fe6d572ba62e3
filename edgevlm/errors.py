"""Errors edgevlm raises for bad input. Each message names the file, key or value at fault."""


class EdgeVLMError(Exception):
    """Base class: bad input or an unsupported model, reported as one readable line."""


class CheckpointError(EdgeVLMError, ValueError):
    """A model directory or weights file is missing, corrupt, or does not match the architecture."""


class UnsupportedModelError(CheckpointError):
    """The checkpoint's model_type (or a setting in its config) is not supported."""


class InputError(EdgeVLMError, ValueError):
    """A prompt, image or generation setting that cannot be used (too long, malformed, ...)."""
