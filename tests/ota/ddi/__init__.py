"""Tests of the hawkBit DDI API, with the real swupdate as the client."""
