"""Similar-cell search: a persistent embedding index with metadata (faiss), reference atlases, slide libraries.

- :mod:`~core.retrieval.protocol`: the published retrieval protocol (key-mean centring, L2, exact search);
- :class:`CellIndex`: add / remove a slide / search / save / reopen, exact below 50k entries, IVF-PQ above;
- :mod:`~core.retrieval.atlas`: labelled reference sets and a k-NN label vote;
- :mod:`~core.retrieval.slides`: indexes of analysed slides' tiles (cells later, through the same ``add``).
"""

from .index import CellIndex, SearchResult
from .rows import RowTable

__all__ = ["CellIndex", "SearchResult", "RowTable"]
