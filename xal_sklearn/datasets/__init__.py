"""Medical image data in: synthetic phantoms and real data loaders."""

from ._phantoms import make_lesion_phantoms

__all__ = ["make_lesion_phantoms"]
