"""comfy-kernel-billing: usage metering, plans, credits, quotas and billing for shared servers."""

__version__ = "0.1.0"
