"""The fleet simulator and load generator (``roost sim``)."""
