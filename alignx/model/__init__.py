"""The AlignX model wrapper, its two auxiliary losses, and the offline bootstrap base model."""
