"""``Processor.chat_format``: the chat template as concatenable pieces (what the C++ runtime and the
multi-turn sessions use) must render exactly what the Jinja template renders."""

from __future__ import annotations

import pytest

from edgevlm.models import load_processor


@pytest.mark.parametrize("fixture", ["smolvlm_dir", "llava_dir", "llama_dir", "shapes-vlm"])
def test_pieces_render_like_the_template(fixture, request):
    path = fixture if "-" in fixture else request.getfixturevalue(fixture)
    _, proc = load_processor(path)
    fmt = proc.chat_format()
    assert fmt is not None
    for n in range(fmt["max_images"] + 1):
        text = "What is in the picture? Tell me."
        assert fmt["first"][str(n)] + text + fmt["tail"] == proc.chat_prompt(text, n)


def test_later_turns_close_the_reply_then_open_a_user_turn():
    _, proc = load_processor("shapes-vlm")
    fmt = proc.chat_format()
    # SmolVLM: the reply ends with <end_of_utterance>, which the stop token is never fed as
    assert fmt["next"]["0"].startswith("<end_of_utterance>") and fmt["tail"].endswith("Assistant:")
    two = proc.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A?"}]},
                       {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                       {"role": "user", "content": [{"type": "text", "text": "B?"}]}])
    # the model answers after "Assistant:" with " red" (its own leading space)
    assert two == fmt["first"]["1"] + "A?" + fmt["tail"] + " red" + fmt["next"]["0"] + "B?" + fmt["tail"]


def test_models_without_a_template_have_no_format():
    _, proc = load_processor("stories260k")
    assert proc.chat_format() is None
