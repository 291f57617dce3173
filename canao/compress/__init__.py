"""Compression techniques: importance, structured slicing, recovery training (imports torch)."""

from canao.compress.slicing import Kept, choose, magnitude_scores, slice_encoder
from canao.models.training import train

__all__ = ["Kept", "choose", "magnitude_scores", "slice_encoder", "train"]
