"""Device state documents (desired, reported, delta), with AWS Device Shadow semantics."""
