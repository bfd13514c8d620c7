"""``metahmr process``: the batch runner over files, folders and videos.

The runner owns everything about files; the :class:`~metahmr_cli.estimator.Estimator` (models loaded once, images
in memory) does the people::

    inputs (io.sources) -> resume check (manifest + settings fingerprint) -> decode -> Estimator.prepare
      -> Estimator.regress (people batched across images and video frames) -> writers (io.writers, io.meshes)
      -> renders (render/) -> manifest.jsonl + summary.json

Each input is isolated: a failure is recorded in the manifest (``failed`` + reason) and the run goes on. Missing
assets are reported all at once, before any work starts. Re-running into the same folder skips inputs whose
outputs are complete *and* were made with the same settings (checkpoint, body, detector, keypoints, TTO, focal
rule, versions) *from the same file*: the manifest records each input's identity (size, modification time, a
content hash: :func:`~metahmr_cli.io.sources.input_identity`), and a replaced file is redone. A video resumes from
its last finished frame.

Modules (each owns one part):

- :mod:`~metahmr_cli.pipeline.runner` -- :class:`Pipeline`, the image/batch loop: inputs, output lock, batches,
  prefetch and writer threads, manifest and summary;
- :mod:`~metahmr_cli.pipeline.video` -- :class:`~metahmr_cli.pipeline.video.VideoRunner`: one video's frames,
  tracking, warm starts, smoothing, its resume state and per-track exports;
- :mod:`~metahmr_cli.pipeline.results` -- :class:`~metahmr_cli.pipeline.results.ResultWriter`: a frame's people
  into the result file, meshes and renders;
- :mod:`~metahmr_cli.pipeline.resume` -- what an earlier run finished; exports made from stored results;
- :mod:`~metahmr_cli.pipeline.fingerprints` -- the settings fingerprints every output carries;
- :mod:`~metahmr_cli.pipeline.records` -- manifest records, run totals, :class:`RunReport`;
- :mod:`~metahmr_cli.pipeline.imported` -- ``--boxes-json`` / ``--keypoints-json`` people;
- :mod:`~metahmr_cli.pipeline.threads` -- the background threads (image prefetch, video read-ahead).
"""

from __future__ import annotations

from metahmr_cli.pipeline.records import RunReport, count_processed, new_totals
from metahmr_cli.pipeline.results import Renderer
from metahmr_cli.pipeline.runner import Pipeline

__all__ = ["Pipeline", "Renderer", "RunReport", "count_processed", "new_totals"]
