"""Traffic split: which version of a model serves a request that names none.

Smooth weighted round robin (as nginx balances upstreams): each pick adds every version's
weight to its credit, takes the version with the most credit and charges it the total. Over
any run of `sum(weights)` requests each version gets exactly its weight, interleaved rather
than in blocks, and no randomness makes a canary's share drift.
"""

from collections.abc import Mapping


class _Rotation:
    def __init__(self, weights: Mapping[str, int]) -> None:
        self._weights = sorted(weights.items(), key=lambda item: int(item[0]))
        self._total = sum(weights.values())
        self._credit = {version: 0 for version, _ in self._weights}

    def next(self) -> str:
        for version, weight in self._weights:
            self._credit[version] += weight
        chosen = max(self._credit, key=self._credit.__getitem__)
        self._credit[chosen] -= self._total
        return chosen


class TrafficSplit:
    """Per-model version weights, from `GatewaySettings.traffic_split`."""

    def __init__(self, weights: Mapping[str, Mapping[str, int]]) -> None:
        self._rotations = {name: _Rotation(versions) for name, versions in weights.items()}

    def choose(self, model_name: str) -> str:
        """The version for the next request to this model; "" when it has no split (the model
        server then picks its newest ready version)."""
        rotation = self._rotations.get(model_name)
        return rotation.next() if rotation is not None else ""
