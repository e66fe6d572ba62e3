"""Bad input gives a clear error naming the file and the key; no pickle is ever loaded."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgevlm.errors import CheckpointError, InputError, UnsupportedModelError
from edgevlm.generate import generate
from edgevlm.models import MODEL_TYPES, load
from edgevlm.sampling import SamplingParams


@pytest.fixture
def model_copy(llama_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(llama_dir, d)
    return d


def test_missing_config(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load(model_copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such model directory"):
        load(tmp_path / "nope")


def test_unknown_model_type_lists_supported(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as e:
        load(model_copy)
    assert "gpt_neox" in str(e.value) and all(t in str(e.value) for t in MODEL_TYPES)


def test_invalid_config_json(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load(model_copy)


def test_missing_tensor_names_file_and_key(model_copy):
    path = model_copy / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load(model_copy)


def test_misshaped_tensor_names_key_and_shapes(model_copy):
    path = model_copy / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 64)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[3, 64\], expected \[32, 64\]"):
        load(model_copy)


def test_unexpected_tensor(model_copy):
    path = model_copy / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.7.mlp.up_proj.weight"] = torch.zeros(2, 2)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"model\.layers\.7\.mlp\.up_proj\.weight"):
        load(model_copy)


def test_truncated_safetensors_names_file_and_tensor(model_copy):
    path = model_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated safetensors file: tensor '.+'"):
        load(model_copy)


@pytest.mark.parametrize("keep", [0, 5, 20])
def test_truncated_header(model_copy, keep):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: (truncated|corrupt)"):
        load(model_copy)


def test_corrupt_header_json(model_copy):
    path = model_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"!!!!"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load(model_copy)


def test_pickle_only_checkpoint_is_refused_without_unpickling(model_copy, monkeypatch):
    tensors = load_file(model_copy / "model.safetensors")
    (model_copy / "model.safetensors").unlink()
    torch.save(tensors, model_copy / "pytorch_model.bin")

    def forbidden(*a, **k):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*safetensors only"):
        load(model_copy)


def test_sharded_checkpoint_loads(llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    d = tmp_path / "sharded"
    shutil.copytree(llama_dir, d)
    (d / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(llama_dir).save_pretrained(d, max_shard_size="50KB")
    assert (d / "model.safetensors.index.json").is_file()
    a, b = load(llama_dir).model, load(d).model
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_missing_shard(llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    d = tmp_path / "sharded"
    shutil.copytree(llama_dir, d)
    (d / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(llama_dir).save_pretrained(d, max_shard_size="50KB")
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        load(d)


def test_prompt_longer_than_the_context(llama_dir):
    model = load(llama_dir)
    with pytest.raises(InputError, match="longer than"):
        generate(model, "word " * 2000, params=SamplingParams(max_new_tokens=4))


def test_prompt_longer_than_an_explicit_context(llama_dir):
    model = load(llama_dir)
    with pytest.raises(InputError, match="context"):
        generate(model, "word " * 100, params=SamplingParams(max_new_tokens=4), max_context=64, chunk_size=16)


def test_image_count_must_match_placeholders(smolvlm_dir, images):
    model = load(smolvlm_dir)
    with pytest.raises(InputError, match="placeholders"):
        model.processor("no placeholder here", [images[0]])


def test_text_only_model_refuses_images(llama_dir, images):
    with pytest.raises(InputError, match="text-only"):
        generate(load(llama_dir), "hi", [images[0]])


def test_bad_sampling_settings():
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(max_new_tokens=-1), dict(repetition_penalty=0)):
        with pytest.raises(InputError):
            SamplingParams(**bad)
