"""Telemetry adapters: where the features' metrics (forge.ports.Meter) are written."""

from forge.telemetry.emf import EmfMeter

__all__ = ["EmfMeter"]
