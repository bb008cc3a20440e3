"""Policy: the policy file, the decision engine, the approval chain, overrides."""
