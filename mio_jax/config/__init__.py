"""The config tree's schema: which keys each section has, checked strictly (values live in configs/).

  keys.py           ConfigError and the checker: an unknown or a missing key is one line naming it
  training.py       the training tree (configs/stageN.py): check_config_keys(config)
  tokenize_job.py   the tokenization job's tree (configs/tokenize.py): check_tokenize_config_keys(config)
"""
