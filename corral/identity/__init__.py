"""Identity: organisation, teams, users, roles, API keys, OIDC."""
