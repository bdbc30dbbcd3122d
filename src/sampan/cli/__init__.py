"""Command lines: `sampan-runc` (runc's), later `sampan` (docker's verbs)."""
