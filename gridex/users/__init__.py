"""People: accounts, roles, profiles and admin user management."""
