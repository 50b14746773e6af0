"""Inference server: ``medsam-kit serve`` runs HTTP API v1 (FastAPI + uvicorn) around one Segmenter.

Clients (the 3D Slicer extension in ``slicer/MedSAMKit``, scripts) upload a volume once, then send
prompts or ask for automatic segmentation and get label-map files back on the uploaded grid. The
model never runs in the client, so Slicer's Python needs no PyTorch.

Modules: :mod:`.app` (:func:`create_app`, the endpoints, auth, error handling), :mod:`.sessions`
(uploaded volumes, LRU under a memory bound), :mod:`.runner` (the model lock and embedding
bookkeeping), :mod:`.files` (upload checks, label-map files incl. Slicer ``.seg.nrrd``),
:mod:`.colors` (the label palette), :mod:`.schemas` (response models of the OpenAPI schema),
:mod:`.guard` (Host / Origin checks against DNS rebinding and cross-site requests).

    from medsam_kit.infer import Segmenter
    from medsam_kit.serve import create_app
    import uvicorn

    app = create_app(Segmenter.from_run("runs/acdc"), token="secret")
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from medsam_kit.serve.app import API_VERSION, check_bind, create_app, is_loopback
from medsam_kit.serve.colors import label_color, label_table
from medsam_kit.serve.sessions import Session, SessionStore

__all__ = ["API_VERSION", "Session", "SessionStore", "check_bind", "create_app", "is_loopback", "label_color",
           "label_table"]
