"""The embedded default: everything the coordinator needs, offline on one machine.

Never packaged into Lambda.
"""
