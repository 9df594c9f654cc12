"""The fleet's inventory: customers, sites, manufacturers, device models, firmware, groups and
devices.
"""
