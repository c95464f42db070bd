"""GraphQL at ``/graphql``: read access to the REST API's objects through the same services and
the same authorisation, and a ``marketEvents`` subscription over the same pub/sub as ``/ws``."""
