"""Training (torch): the VAE first, then the text encoder and U-Net on the VAE's latents."""
