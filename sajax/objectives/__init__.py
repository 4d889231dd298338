"""Energies for ``sajax.anneal``: each returns ``(energy_fn, data)``."""

from sajax.objectives.weighted_tardiness import weighted_tardiness

__all__ = ["weighted_tardiness"]
