"""Plots and the self-contained HTML report."""

from . import plots
from .html import build_report

__all__ = ["build_report", "plots"]
