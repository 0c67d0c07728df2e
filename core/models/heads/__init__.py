"""Task heads that sit on backbone features, and the self-describing file each one is saved in.

``linear``: a cell/tile classifier on CLS features. ``abmil``: a slide classifier over the tile features of a slide
that also gives each tile's attention (the slide heat map). ``save_head``/``load_head`` store weights and everything
needed to rebuild and label them in one ``.safetensors`` file, so a bundle can list heads without side files.
"""

from .abmil import ABMIL, ABMILOutput
from .head_file import HEAD_KINDS, HeadFile, load_head, save_head
from .linear import LinearHead

__all__ = ["ABMIL", "ABMILOutput", "LinearHead", "HeadFile", "HEAD_KINDS", "load_head", "save_head"]
