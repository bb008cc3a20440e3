"""Corral: the control plane for AI coding agents."""
