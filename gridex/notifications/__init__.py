"""Notifications: stored per user, pushed live, emailed by preference; and the fact followers
that derive them (and alerts) from committed rows."""
