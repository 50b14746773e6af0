"""medsam_kit: medical-image segmentation with SAM-family models.

Public API (arrays are ``(Z, Y, X)`` / ``(C, Z, Y, X)``; geometry is LPS, see
:mod:`medsam_kit.io.geometry`):

* :func:`read_volume`, :func:`write_volume`, :class:`Volume`, :class:`Geometry` — volume I/O.
* :class:`Case`, :func:`list_datasets`, :func:`discover_cases` — dataset adapters.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medsam_kit.data.case import Case  # noqa: E402
from medsam_kit.io import Geometry, Volume, read_volume, write_volume  # noqa: E402

__all__ = ["__version__", "Case", "Geometry", "Volume", "read_volume", "write_volume"]
