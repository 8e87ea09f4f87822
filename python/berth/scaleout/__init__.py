"""Berth beyond one machine, on Ray (docs/ray.md).

A replica is a berthd with its workers, started and owned by a Ray actor that
holds the replica's resources (:mod:`.replica`); a controller actor keeps the
wanted number alive, scales, rolls updates and tells the gateway (a berthd in
gateway mode) the replica set (:mod:`.controller`, :mod:`.gateway`). Ray is the
control plane only: requests go client -> gateway -> replica.

Ray is imported only when a cluster is used: :mod:`.config` (the ``ray:``
block) works without it.
"""

from __future__ import annotations

from .config import Autoscaling, RaySettings, Resources, parse_ray_block

__all__ = ["Autoscaling", "RaySettings", "Resources", "parse_ray_block"]
