"""The web app for members and operators: static ES modules served at ``/`` over the public API."""
