"""The Beam coder of an ImageAnnotation, registered for the type when this module is imported.

(filename, line, faces as little-endian int32 bytes): compact and deterministic. Pickled, the
annotations of a split cost the local runner several times more memory as they pass through the
shard writers' side input.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from pipeline.annotations import BOX_FIELDS, ImageAnnotation


class ImageAnnotationCoder(beam.coders.Coder):
    """ImageAnnotation <-> bytes: (filename, line, faces [N, len(BOX_FIELDS)] int32)."""

    _PARTS = beam.coders.TupleCoder([beam.coders.StrUtf8Coder(), beam.coders.VarIntCoder(), beam.coders.BytesCoder()])

    def encode(self, annotation: ImageAnnotation) -> bytes:
        return self._PARTS.encode((annotation.filename, annotation.line, annotation.faces.astype("<i4").tobytes()))

    def decode(self, encoded: bytes) -> ImageAnnotation:
        filename, line, faces = self._PARTS.decode(encoded)
        return ImageAnnotation(filename, line, np.frombuffer(faces, "<i4").reshape(-1, len(BOX_FIELDS)))

    def is_deterministic(self) -> bool:
        return True


beam.coders.registry.register_coder(ImageAnnotation, ImageAnnotationCoder)
