"""The local logic of doors and sensors: stimuli from the hardware (``stimuli.py``) through pure
reactions (``reactions.py``) to the outputs and events (``side.py``), with the credentials
(``credentials.py``) and the door actions queued by the cloud (``door_actions.py``).
"""
