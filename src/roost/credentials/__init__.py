"""Device credentials: signed tokens, X.509 certificates, symmetric keys and SAS tokens, and the
authenticator every door calls.
"""
