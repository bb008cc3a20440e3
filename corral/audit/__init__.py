"""The audit ledger: tamper-evident records of mutating operations and control-plane changes."""
