"""Versioned, content-addressed artifacts (files and small objects) with aliases and lineage to runs.

>>> import ragtrail
>>> art = ragtrail.Artifact("index-config", "config")          # doctest: +SKIP
>>> art.add_dir("configs/index")                                # doctest: +SKIP
>>> v = ragtrail.artifacts.log_artifact(art, aliases=["staging"])  # doctest: +SKIP
>>> ragtrail.artifacts.get_artifact("index-config:staging").download("out/")  # doctest: +SKIP

See docs/artifacts.md.
"""

from __future__ import annotations

from ragtrail.artifacts._artifact import (
    Artifact,
    ArtifactPromotion,
    ArtifactVersion,
    alias_history,
    artifacts_of_run,
    diff,
    get_artifact,
    lineage,
    list_artifacts,
    log_artifact,
    manifest_digest,
    promote,
    set_alias,
    use_artifact,
    versions,
)
from ragtrail.artifacts._blobs import Blobs, FsspecBlobs, LocalBlobs, open_blobs

__all__ = [
    "Artifact",
    "ArtifactPromotion",
    "ArtifactVersion",
    "Blobs",
    "FsspecBlobs",
    "LocalBlobs",
    "alias_history",
    "artifacts_of_run",
    "diff",
    "get_artifact",
    "lineage",
    "list_artifacts",
    "log_artifact",
    "manifest_digest",
    "open_blobs",
    "promote",
    "set_alias",
    "use_artifact",
    "versions",
]
