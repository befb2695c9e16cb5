"""Session logic: what runs where, with which environment. Speaks only to the provider protocol."""
