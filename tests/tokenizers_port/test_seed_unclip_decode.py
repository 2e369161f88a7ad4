"""SEED codes -> pixels through a tiny random StableUnCLIPImg2ImgPipeline, built from diffusers' and
transformers' own classes with the components stable-diffusion-2-1-unclip's model_index.json names
(no download). Oracle: the pipeline called directly, as MIO's ImageTokenizer.decode calls it
(image_embeds from the code embedding, PIL output), with the same generator and settings."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from mio_jax.tokenize.tiny_tokenizers import make_tiny_seed  # noqa: E402
from tokenizers_port import seed as seed_port  # noqa: E402
from tokenizers_port.seed import unclip_decode  # noqa: E402

STEPS = 2  # the tiny unet is random: two steps run the same loop as MIO's 20


def _tiny_clip_tokenizer(d):
  from transformers import CLIPTokenizer
  d = d / "clip_tokenizer"
  d.mkdir()
  chars = "abcdefghijklmnopqrstuvwxyz"
  vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
  for c in chars:
    vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
  (d / "vocab.json").write_text(json.dumps(vocab))
  (d / "merges.txt").write_text("#version: 0.2\n")
  # from_pretrained reads vocab.json + merges.txt in transformers 4 and 5 (whose __init__ differ).
  return CLIPTokenizer.from_pretrained(str(d), model_max_length=77)


def tiny_unclip_pipeline(d, embed_dim: int):
  """stable-diffusion-2-1-unclip's components at toy sizes; the unet's projection class embedding
  takes the image embedding and its noise-level embedding, concatenated (2 x embed_dim)."""
  from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline,
                         UNet2DConditionModel)
  from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
      StableUnCLIPImageNormalizer)
  from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                            CLIPVisionModelWithProjection)
  torch.manual_seed(0)
  text = 32
  tokenizer = _tiny_clip_tokenizer(d)
  text_encoder = CLIPTextModel(CLIPTextConfig(
      vocab_size=len(tokenizer), hidden_size=text, intermediate_size=37, num_hidden_layers=2,
      num_attention_heads=4, projection_dim=text, bos_token_id=0, eos_token_id=1, pad_token_id=1))
  image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
      hidden_size=16, intermediate_size=16, projection_dim=embed_dim, num_hidden_layers=1,
      num_attention_heads=2, image_size=8, patch_size=4))
  unet = UNet2DConditionModel(
      sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4),
      cross_attention_dim=text, class_embed_type="projection",
      projection_class_embeddings_input_dim=2 * embed_dim, upcast_attention=True,
      use_linear_projection=True)
  vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                      down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=32)
  normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
  with torch.no_grad():  # zero mean / unit std would make scale/unscale the identity
    normalizer.mean.normal_(0, 0.1)
    normalizer.std.uniform_(0.5, 1.5)
  return StableUnCLIPImg2ImgPipeline(
      feature_extractor=CLIPImageProcessor(size={"shortest_edge": 8}, crop_size=8),
      image_encoder=image_encoder, image_normalizer=normalizer,
      image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
      tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
      scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
                              clip_sample=False),
      vae=vae)


# The tiny pipeline and SEED folder take ~8 s to build on 2 cores: the cases that use them are in the
# slow set (the decode extra is optional); the folder check stays in the default run.
_PIPELINE = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp("unclip")
  seed_dir = make_tiny_seed(str(d / "seed"))
  tok = seed_port.load(seed_dir)
  pipe = tiny_unclip_pipeline(d, tok.config.unclip_dim)
  pipe.save_pretrained(str(d / "pipe"))
  return {"tok": tok, "pipe": pipe, "dir": str(d / "pipe"), "seed_dir": seed_dir}


def _codes(n, seed=0):
  return np.random.default_rng(seed).integers(0, 8192, (n, 32))


def _direct(pipe, tok, codes, guidance_scale, noise_level, seed):
  """As MIO's ImageTokenizer.decode: image_embeds=get_codebook_entry(codes), PIL images out."""
  embeds = torch.from_numpy(np.array(tok.embed_codes(codes)))
  images = pipe(prompt=[""] * len(codes), image_embeds=embeds, guidance_scale=guidance_scale,
                noise_level=noise_level, num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(seed)).images
  return np.stack([np.asarray(im) for im in images])


@_PIPELINE
def test_decode_codes_matches_the_pipeline_called_directly(setup):
  tok, pipe = setup["tok"], setup["pipe"]
  pipe.set_progress_bar_config(disable=True)
  codes = _codes(2)
  got = unclip_decode.decode_codes(tok, pipe, codes, num_inference_steps=STEPS, seed=3)
  assert got.dtype == np.uint8 and got.shape == (2, 32, 32, 3)  # unet 16 x vae factor 2
  np.testing.assert_array_equal(got, _direct(pipe, tok, codes, 10.0, 0, seed=3))
  assert got.std() > 0 and not np.array_equal(got[0], got[1])
  # Other settings reach the pipeline: noise level and guidance change the pixels as directly.
  other = unclip_decode.decode_codes(tok, pipe, codes, guidance_scale=3.0, noise_level=100,
                                     num_inference_steps=STEPS, seed=3)
  np.testing.assert_array_equal(other, _direct(pipe, tok, codes, 3.0, 100, seed=3))
  assert not np.array_equal(other, got)


@_PIPELINE
def test_loaded_from_disk_without_the_image_encoder(setup, tmp_path):
  """save_pretrained -> load_unclip_pipeline (the real loading path; the image encoder folder is
  removed, as a user may leave it out) decodes what the in-memory pipeline does."""
  import shutil
  d = tmp_path / "pipe"
  shutil.copytree(setup["dir"], d)
  shutil.rmtree(d / "image_encoder")
  loaded = unclip_decode.load_unclip_pipeline(str(d))
  assert loaded.unet.dtype == torch.float32
  codes = _codes(1, seed=1)
  want = unclip_decode.decode_codes(setup["tok"], setup["pipe"], codes, num_inference_steps=STEPS)
  np.testing.assert_array_equal(unclip_decode.decode_codes(setup["tok"], loaded, codes,
                                                           num_inference_steps=STEPS), want)


@_PIPELINE
def test_cli_writes_pngs(setup, tmp_path):
  from PIL import Image
  np.save(tmp_path / "codes.npy", _codes(1, seed=2)[0])  # one image: [32]
  paths = unclip_decode.main(["--seed", setup["seed_dir"], "--unclip",
                              setup["dir"], "--codes", str(tmp_path / "codes.npy"), "--out",
                              str(tmp_path / "out"), "--steps", str(STEPS)])
  assert [p.rsplit("/", 1)[1] for p in paths] == ["image_000.png"]
  assert np.asarray(Image.open(paths[0])).shape == (32, 32, 3)


@pytest.mark.parametrize("codes, message", [
    (np.zeros((2, 31), np.int64), r"expected integer codes \[B, 32\]"),
    (np.zeros((2, 32), np.float32), r"expected integer codes \[B, 32\]"),
    (np.full((1, 32), 8192), r"codes must lie in \[0, 8192\)"),
    (np.full((1, 32), -1), r"codes must lie in \[0, 8192\)"),
])
@_PIPELINE
def test_bad_codes_are_one_line_errors(setup, codes, message):
  with pytest.raises(ValueError, match=message) as e:
    unclip_decode.decode_codes(setup["tok"], setup["pipe"], codes)
  assert "\n" not in str(e.value)


def test_not_a_pipeline_folder_is_one_line(tmp_path):
  with pytest.raises(ValueError, match="no model_index.json") as e:
    unclip_decode.load_unclip_pipeline(str(tmp_path))
  assert "\n" not in str(e.value)
