"""Model family. ``unet``, ``vae``, ``text_encoder`` and ``checkpoint`` need torch; ``tokenizer`` and ``specs`` do not."""
