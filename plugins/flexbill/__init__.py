"""flexbill: suspension-aware batch invoicing for flexible-workspace operators."""

__version__ = "0.1.0"
