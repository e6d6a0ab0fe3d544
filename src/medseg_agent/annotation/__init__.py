"""People in the loop: episodes a person and an agent share, volumes shown slice by slice, and the
store that turns every saved session into trajectory records ``trajectories export`` reads.

The browser app (``medseg-agent app``, :mod:`medseg_agent.serving.app_api`) is one front end of
this package; everything here works without HTTP.
"""
