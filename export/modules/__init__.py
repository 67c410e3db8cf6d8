"""Torch modules for the IndexTTS2 components; attribute names equal the checkpoint keys."""
