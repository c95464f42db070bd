"""Sign-in, sessions, tokens, wallet sign-in and API keys."""
