"""Pure domain: release state machine, pipeline slot, pipelines config, inbound events.

Nothing here talks to AWS; it is plain Python that the use cases in ``chalicelib.service`` drive.
"""
