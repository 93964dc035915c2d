"""Fine-tuning a pretrained speech encoder end to end (the ``finetune`` estimator's parts).

- :mod:`~polyemo.train.finetuning.settings`: the ``finetune`` head's params, validated;
- :mod:`~polyemo.train.finetuning.model`: trainable encoders (transformers SSL models,
  Whisper's encoder on the real length), pooling + head, freezing, LoRA, LR groups;
- :mod:`~polyemo.train.finetuning.audio`: cut/pad, random crops, augmentation, batches;
- :mod:`~polyemo.train.finetuning.loop`: the training loop (resumable, DDP);
- :mod:`~polyemo.train.finetuning.deploy`: a fine-tuned model as an encoder for bundles.

The estimator itself is :class:`polyemo.train.finetune.FinetuneEstimator`.
"""
