"""Regions: the communities a deployment runs. Admins create them; people, meters and orders may
name existing ones only."""
