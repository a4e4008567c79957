"""``difftrt serve``: an HTTP service over an export, with step-level batching (``difftrt.batching``)."""
