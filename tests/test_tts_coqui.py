"""The `coqui` backend, for real: a small VITS model is built from a config with
random weights and saved as a checkpoint, then loaded and run through the stage
(no pretrained Coqui voice can be downloaded here)."""
import numpy as np
import pytest

from pipeline.config import parse_config
from pipeline.errors import ModelNotFoundError
from pipeline.events import Sentence
from tests.conftest import DEFAULT_CONFIG, aiter_of, collect, run


def build_small_vits(folder):
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.configs.vits_config import VitsArgs
    from TTS.tts.models.vits import Vits

    args = VitsArgs(hidden_channels=32, hidden_channels_ffn_text_encoder=64,
                    num_heads_text_encoder=2, num_layers_text_encoder=2, num_layers_flow=2,
                    num_layers_posterior_encoder=2, upsample_initial_channel_decoder=64,
                    resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
                    init_discriminator=False, use_sdp=False)
    config = VitsConfig(
        model_args=args, use_phonemes=False, text_cleaner="basic_cleaners",
        characters=CharactersConfig(characters_class="TTS.tts.models.vits.VitsCharacters",
                                    pad="<PAD>", eos="<EOS>", bos="<BOS>", blank="<BLNK>",
                                    characters="abcdefghijklmnopqrstuvwxyz",
                                    punctuations="!'(),-.:;? ", phonemes=None))
    torch.manual_seed(0)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder / "model.pth", folder / "config.json", config.audio.sample_rate


def test_coqui_stage_synthesizes_with_a_model_built_from_config(tmp_path):
    from stages.tts_coqui import CoquiConfig, CoquiTTS

    model, config, rate = build_small_vits(tmp_path)
    tts = CoquiTTS(CoquiConfig(model_path=str(model), config_path=str(config)))
    run(tts.start())
    chunks = run(collect(tts.process(aiter_of([Sentence(1, 0.0, "hello there, how are you?", 0),
                                               Sentence(1, 0.0, "fine.", 1)]))))
    run(tts.aclose())
    assert [c.sentence_index for c in chunks] == [0, 1]
    assert tts.sample_rate == rate and all(c.sample_rate == rate for c in chunks)
    for c in chunks:
        assert c.samples.dtype == np.float32 and len(c.samples) > 0
        assert np.isfinite(c.samples).all() and np.abs(c.samples).max() > 0


def test_coqui_profile_validates_paths(tmp_path):
    import yaml
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["tts"] = {"backend": "coqui", "model_path": str(tmp_path / "none.pth"),
                   "config_path": str(tmp_path / "none.json")}
    with pytest.raises(ModelNotFoundError, match="tts.model_path"):
        parse_config(data)
