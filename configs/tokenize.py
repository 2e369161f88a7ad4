"""Offline tokenization job config: `--config=configs/tokenize.py:PRESET`.

Presets:
  mini          all six manifests of data/mini (the committed mini corpus)
  image_text, speech_text, video_text, interleaved, text, conversation
                the one data/mini manifest of that kind
  coco_captions, librispeech
                TFDS data sets: needs tensorflow-datasets (not TensorFlow) and the data set
                prepared in array_record format under tfds_data_dir (docs/tokenization.md)
Override any key on the command line, e.g. --config.input=my.jsonl --config.output_dir=out
--config.image_tokenizer=DIR --config.speech_tokenizer=DIR.
"""

import os

import ml_collections

MINI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mini")
KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")
TFDS = {"coco_captions": "tfds:coco_captions/train", "librispeech": "tfds:librispeech/train_clean100"}


def get_config(preset: str = "mini") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  if preset == "mini":
    c.input = ",".join(os.path.join(MINI, f"{k}.jsonl") for k in KINDS)
  elif preset in KINDS:
    c.input = os.path.join(MINI, f"{preset}.jsonl")
  elif preset in TFDS:
    c.input = TFDS[preset]
  else:
    raise ValueError(f"tokenize preset {preset!r} is not one of mini, {', '.join(KINDS + tuple(TFDS))}")
  c.output_dir = ""
  c.tfds_data_dir = ""

  # Encoders: converted tokenizer folders (tokenizers_port.convert; tiny random ones from
  # `python -m mio_jax.tokenize.tiny_tokenizers DIR`; trained ones in data/tokenizers/), or "" for
  # none (such samples are quarantined). The image folder's config.json says which tokenizer it is:
  # a VQGAN (a raster grid of codes, 256 for f16 at 256 px) or SEED-Tokenizer-2 (`convert seed`,
  # MIO-7B's: 32 codes per image; docs/seed_tokenizer.md).
  c.image_tokenizer = ""
  c.speech_tokenizer = ""
  c.image_batch_size = 8  # per encoder call, over all local devices (a multiple of their count)
  # The VQGAN's convolutions (tokenizers_port.vqgan.load): "auto" = Winograd on CPU (faster encodes of
  # the real f16 models, slower compiles), XLA's own elsewhere; "direct" | "winograd" to choose.
  c.image_conv_impl = "auto"
  c.speech_batch_size = 8
  # Clips are padded to a multiple of this many samples (0: the tokenizer's own, 1 s): each padded
  # length is one compiled shape. The ported SpeechTokenizer masks padding, so codes do not change.
  c.speech_pad_multiple = 0
  if preset == "mini" or preset in KINDS:
    # The mini corpus's tiny tokenizers: Winograd buys nothing at 8 channels and compiles in 12 s
    # against 2.5 s (AVX2, 2 cores); its clips are 1-3 s, so one 3 s shape instead of three (the
    # port masks padding: same codes).
    c.image_conv_impl = "direct"
    c.speech_pad_multiple = 48000

  # Work split: shard i goes to process i % process_count. -1: jax.process_index()/process_count().
  c.shard_size = 256
  c.process_index = -1
  c.process_count = -1
  c.distributed_init = False  # launch/tokenize.py calls jax.distributed.initialize() first
  c.num_workers = 4  # decoding threads
  c.prefetch_shards = 1  # shards decoded ahead of the one being encoded
  c.progress = True

  # Decoding and MIO's filters (mio_jax.tokenize.media.MediaConfig).
  c.media = ml_collections.ConfigDict(dict(
      image_min_side=224,  # MIO: drop images under 224x224
      image_max_aspect=2.0,  # MIO: drop aspect ratio over 2:1
      video_min_side=224,
      video_max_aspect=2.0,
      sample_rate=16000,
      resample=True,  # False: clips at other rates are quarantined
      min_input_rate=8000,
      max_input_rate=192000,
      speech_max_s=15.0,  # MIO: drop clips over 15 s
      # video_text: "uniform" (centres of num_frames segments), "mio_uniform" (MIO's extract_frames:
      # every (frames // num_frames)-th frame) or "keyframes"; "auto": the image tokenizer's
      # (VQGAN: uniform, SEED-2: mio_uniform)
      pair_video_mode="auto",
      interleaved_video_mode="keyframes",  # interleaved / conversation video: scene-change keyframes
      num_frames=0,  # 0: the image tokenizer's (VQGAN: 4, MIO: 4-8; SEED-2: 10, MIO's "~10")
      max_keyframes=8,
      scene_threshold=30.0,
  ))
  return c
