"""The sandbox's behaviour split by MoneyKit area, one backend per area behind ``SandboxState``."""
