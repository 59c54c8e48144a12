"""Demo mode: a synthetic world in the offline sandbox, scripted scenarios and a one-click reset."""

from linkdesk.demo.sandbox import DemoRefused, SandboxControls, SandboxUnavailable
from linkdesk.demo.service import DemoModeOff, DemoService, DemoStatus, ResetReport

__all__ = [
    "DemoModeOff",
    "DemoRefused",
    "DemoService",
    "DemoStatus",
    "ResetReport",
    "SandboxControls",
    "SandboxUnavailable",
]
