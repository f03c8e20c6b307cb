"""Training LoRA adapters that vLLM can serve: ``lorafleet train`` (the user's guide: docs/training.md).

- :mod:`lorafleet.train.data`: OpenAI fine-tuning JSONL, read and validated (standard library);
- :mod:`lorafleet.train.lora`: options vLLM can serve, masking, the training loop, saving; standalone,
  shared with the demo model builder;
- :mod:`lorafleet.train.cli`: the command's options and early refusals (no torch);
- :mod:`lorafleet.train.run`: the run itself (torch, transformers, peft: ``pip install 'lorafleet[train]'``);
- :mod:`lorafleet.train.card`: the adapter's README.md; :mod:`lorafleet.train.sample`: a toy dataset.

Nothing here imports torch at import time.
"""
