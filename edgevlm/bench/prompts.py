"""Prompts of an exact token count, the way every backend will see them.

A benchmark prompt is a one-turn user message through the model's chat template (with the image
placeholder expanded to its image tokens when there is an image), whose text is ordinary words
repeated until the tokenizer gives the asked-for count. Every backend tokenizes identically (the
export verification and the native parity tests check it), so one text serves them all; each
worker still reports the count its runtime saw.

The C++ ``edgevlm-bench`` builds its prompts from token ids instead (no template); the counts are
the same, only the ids differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError

WORDS = ("the red circle is next to a small blue square and a green triangle on a white page ; "
         "count every shape , name each colour , then say where it sits .").split()
_NUDGES = (" a", "a", ".", " ,", "x", " the")


@dataclass
class Prompt:
    requested: int  # tokens asked for
    tokens: int  # tokens the text gives (== requested unless the tokenizer made it impossible)
    text: str  # the user's text; the template and image placeholder are added by the session


def words(k: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(k))


def fit_text(count: Callable[[str], int], n: int, max_words: int = 1 << 16) -> tuple[str, int]:
    """The text (built from :data:`WORDS`) whose whole prompt ``count(text)`` is ``n`` tokens.

    ``count`` must grow (not strictly) with the number of words. Binary search on the words, then
    single characters close the gap. Raises :class:`InputError` when even an empty text is longer.
    """
    floor = count("")
    if floor > n:
        raise InputError(f"a {n}-token prompt is impossible: the prompt without any text already has {floor} tokens")
    lo, hi = 0, 1  # count(words(lo)) <= n; find hi with count(words(hi)) > n
    while count(words(hi)) <= n:
        lo, hi = hi, hi * 2
        if hi > max_words:
            raise InputError(f"could not build a {n}-token prompt from words")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(words(mid)) <= n:
            lo = mid
        else:
            hi = mid
    text = words(lo)
    have = count(text)
    while have < n:
        for piece in _NUDGES:
            c = count(text + piece)
            if have < c <= n:
                text, have = text + piece, c
                break
        else:
            break
    return text, have


def prompt_counter(processor, image=None) -> Callable[[str], int]:
    """``count(text)``: tokens of a one-turn prompt with ``text`` (and the image, if given)."""
    tokenizer = processor.tokenizer
    if image is None:
        if processor.chat_template is None:
            return lambda text: len(tokenizer.encode(text))
        return lambda text: len(tokenizer.encode(processor.chat_prompt(text, 0)))
    from ..processing.image import load_image

    expanded = processor.image_prompt(processor.preprocess_image(load_image(image)))
    token = processor.image_token
    return lambda text: len(tokenizer.encode(processor.chat_prompt(text, 1).replace(token, expanded, 1)))


def build_prompts(processor, lengths: list[int], image=None) -> list[Prompt]:
    """One :class:`Prompt` per asked length; :class:`InputError` names a length that cannot be met."""
    count = prompt_counter(processor, image)
    out = []
    for n in lengths:
        try:
            text, have = fit_text(count, n)
        except InputError as e:
            what = "the image turn" if image is not None else "the chat template"
            raise InputError(f"--prompt-tokens {n}: {e} ({what}); ask for more tokens") from None
        out.append(Prompt(n, have, text))
    return out


__all__ = ["Prompt", "WORDS", "build_prompts", "fit_text", "prompt_counter", "words"]
