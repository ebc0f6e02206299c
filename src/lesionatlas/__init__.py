"""lesionatlas: lesion-level response and progression dynamics of metastatic cancer cohorts."""
__version__ = "0.1.0"
